"""Storage by URI: a local folder or ``gs://bucket/prefix``, and atomic local writes.

- :mod:`~seals_al.storage.base`: the :class:`~seals_al.storage.base.Storage` interface, its keys and errors;
- :mod:`~seals_al.storage.local` and :mod:`~seals_al.storage.gcs`: the two backends;
- :mod:`~seals_al.storage.files`: atomic files and folders on this machine, manifests;
- :mod:`~seals_al.storage.uris`: URIs and the cache's place;
- here: :func:`open_storage` and the file-level helpers over it.

Writes are atomic: locally a temp file in the same folder, then ``os.replace``; on GCS a single
object upload, which is all-or-nothing. ``once=True`` makes a write fail if the key exists
(locally a hard link, which refuses an existing name; on GCS ``if_generation_match=0``).

Why not fsspec: the product needs five operations on two backends, with write-once and exact
error messages; a small module over google-cloud-storage keeps both in view.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seals_al.errors import SealsError
from seals_al.storage.base import Storage
from seals_al.storage.files import atomic_path
from seals_al.storage.gcs import GCSStorage
from seals_al.storage.local import LocalStorage
from seals_al.storage.uris import is_remote, local_path, split_uri


def check_output_file(uri: str, campaign: str, what: str, ours: Callable[[bytes], bool]) -> str:
    """Refuse, before any work, an output file a command must not write: one inside the campaign
    (its own files and data live there), a scheme it cannot write, a folder, or an existing file
    that ``ours`` (given its bytes) does not recognise as an earlier output of the same kind.
    Returns where the file is."""
    parent, name = split_uri(uri)
    storage = open_storage(parent)
    where = storage.where(name)
    root = str(campaign).rstrip("/")
    if is_remote(root) or is_remote(where):
        inside = where.startswith(root + "/")
    else:
        inside = Path(where).resolve().is_relative_to(local_path(root).resolve())
    if inside:
        raise SealsError(f"{where}: inside the campaign {root}; write the {what} outside it")
    if not is_remote(where) and Path(where).is_dir():
        raise SealsError(f"{where}: is a folder; --out names the {what} file to write")
    if storage.exists(name) and not ours(storage.read_bytes(name)):
        raise SealsError(
            f"{where}: exists and is not a {what} seals-al wrote; choose another --out (nothing was written)"
        )
    return where


def local_file(uri: str, cache_dir: str | Path) -> Path:
    """A local path for a file URI: itself if local, else a copy of the gs:// object in the cache
    (fetched again each time, so a changed object is seen)."""
    if not is_remote(uri):
        return local_path(uri)
    parent, name = split_uri(uri)
    target = Path(cache_dir) / "downloads" / hashlib.sha256(uri.encode()).hexdigest()[:16] / name
    data = open_storage(parent).read_bytes(name)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def open_storage(uri: str | Path) -> Storage:
    """A local folder (a path or file:// URI) or gs://bucket/prefix."""
    text = str(uri)
    if text.startswith("gs://"):
        return GCSStorage(text)
    return LocalStorage(local_path(text))


@contextmanager
def work_folder(parent: str | Path, local_dir: str | Path | None = None) -> Iterator[str]:
    """An empty folder for Beam workers' parts, removed with everything in it afterwards: a new
    ``work-<random>`` prefix under a gs:// ``parent`` (every worker sees it), else a temporary
    folder on this machine (in ``local_dir``, default the system's), which only workers on this
    machine see."""
    if not is_remote(parent):
        Path(local_dir or tempfile.gettempdir()).mkdir(parents=True, exist_ok=True)
        local = tempfile.mkdtemp(prefix="seals-work-", dir=local_dir)
        try:
            yield local
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    work = f"{str(parent).rstrip('/')}/work-{uuid.uuid4().hex}"
    try:
        yield work
    finally:
        parts = open_storage(work)
        for key in parts.list():
            parts.delete(key)
