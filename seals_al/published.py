"""Folders shared between tasks through object storage: an embeddings store, an index, a neighbour
graph. Writers publish; readers materialize a local copy in a cache (docs/ARCHITECTURE.md).

A folder published at a URI (``gs://bucket/prefix`` or a local path) holds its files and, written
last, ``published.json``::

    {"format": "seals-published/1", "content": "seals-index/1",
     "files": {"index.faiss": {"bytes": 1536045, "sha256": "..."}, "manifest.json": {...}}}

A reader trusts nothing that ``published.json`` does not list: a folder without it is missing or
its writer did not finish, and either is a clear error naming the object. Materializing copies the
listed files into ``CACHE/published/<sha256 of published.json>/``, checks every checksum, and
moves the folder into place in one rename, so two processes filling the cache at once both end
with one complete copy; a pod downloads each version of a folder at most once per cache (in a
pipeline, the run's workspace). A local folder is used in place: local writers publish atomically
(:func:`seals_al.storage.atomic_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tqdm import tqdm

from seals_al.errors import SealsError, shown
from seals_al.storage import (
    check_key,
    check_replaceable,
    default_cache_dir,
    file_sha256,
    open_storage,
    parse_manifest,
)

FORMAT = "seals-published/1"
LISTING = "published.json"
MAX_LISTING_BYTES = 16 << 20


def is_remote(uri: str | Path) -> bool:
    """Whether a folder URI is on object storage (gs://) or a local path (a path or file://); any
    other scheme is an error naming the URI."""
    text = str(uri)
    if "://" in text and not text.startswith(("gs://", "file://")):
        raise SealsError(f"{text}: unsupported URI scheme (use a local path or gs://bucket/prefix)")
    return text.startswith("gs://")


def _listing(uri: str) -> tuple[dict, bytes] | None:
    """A remote folder's listing and its bytes; None when there is none."""
    storage = open_storage(uri)
    if not storage.exists(LISTING):
        return None
    data = storage.read_bytes(LISTING, MAX_LISTING_BYTES)
    try:
        listing = json.loads(data)
    except ValueError as e:
        raise SealsError(f"{storage.where(LISTING)}: not valid JSON: {e}") from e
    if (
        not isinstance(listing, dict)
        or listing.get("format") != FORMAT
        or not isinstance(listing.get("files"), dict)
    ):
        raise SealsError(f"{storage.where(LISTING)}: not a {FORMAT} listing")
    return listing, data


def version(uri: str | Path) -> str | None:
    """What identifies a remote folder's content without reading it: the sha256 of its listing
    (None for a local folder or when nothing is published there)."""
    if not is_remote(uri):
        return None
    found = _listing(str(uri))
    return None if found is None else "published " + hashlib.sha256(found[1]).hexdigest()


def check_target(uri: str | Path, content_format: str) -> None:
    """Before any expensive work: ``uri`` is a place a writer of ``content_format`` may publish
    (a local path or gs://, the bucket reachable) holding nothing else: absent, empty, or an
    earlier publish of the same kind (see :func:`seals_al.storage.check_replaceable`)."""
    if not is_remote(uri):
        check_replaceable(str(uri).removeprefix("file://"), content_format)
        return
    storage = open_storage(str(uri))
    try:
        keys = storage.list()
    except Exception as e:  # the client's own errors: a missing bucket, no permission, no network
        raise SealsError(f"{uri}: cannot be listed ({type(e).__name__}: {shown(str(e), 200)})") from e
    if not keys:
        return
    found = _listing(str(uri))
    content = found[0].get("content") if found else None
    if content != content_format:
        held = f"holds a {shown(content)} output" if found else f"holds objects but no {LISTING}"
        raise SealsError(
            f"{uri}: {held}, not an earlier {content_format} output; publishing would replace "
            "what is there, so choose another"
        )


def publish(local: Path, uri: str, content_format: str, progress: bool = True) -> dict:
    """Upload the files of a local folder to ``uri``, then its listing; the files a previous
    listing there named and this one does not are removed afterwards. A file the previous listing
    names with the same bytes (sha256) is not uploaded again: an appended store uploads its new
    shards only.

    Returns:
        The listing written.
    """
    storage = open_storage(uri)
    previous = _listing(uri)
    if previous is not None:  # readers see "not published", never old names with new bytes
        storage.delete(LISTING)
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    files = {}
    total = sum((local / n).stat().st_size for n in names)
    with tqdm(total=total, desc=f"publish {uri}", unit="B", unit_scale=True, disable=not progress) as bar:
        for name in names:
            path = local / name
            files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            kept = previous is not None and previous[0]["files"].get(name) == files[name]
            if not (kept and storage.exists(name)):
                storage.upload(path, name)
            bar.update(files[name]["bytes"])
    listing = {"format": FORMAT, "content": content_format, "files": files}
    storage.write_bytes(LISTING, _listing_bytes(listing))
    for stale in sorted(set(previous[0]["files"]) - set(files)) if previous else ():
        storage.delete(stale)
    return listing


def _listing_bytes(listing: dict) -> bytes:
    return (json.dumps(listing, indent=1, sort_keys=True) + "\n").encode()


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "published"


def materialize(
    uri: str | Path, kind: str, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """A local folder with the content published at ``uri``: the folder itself when local, else
    the cached copy of its current version (downloaded and checked first if this cache has none).
    Nothing published there is an error naming ``uri``.

    Args:
        uri: a local folder or gs://bucket/prefix.
        kind: what the folder should be, for messages ("an embeddings store").
        cache_dir: the cache (default $SEALS_CACHE_DIR); in a pipeline, the run's workspace.
        progress: show a progress bar while downloading.
    """
    path = materialize_if_published(uri, cache_dir, progress)
    if path is None:
        raise SealsError(
            f"{uri}: not {kind}: no {LISTING} there (nothing was published, or its writer did not "
            "finish; run the step that writes it)"
        )
    return path


def materialize_if_published(
    uri: str | Path, cache_dir: str | Path | None = None, progress: bool = True
) -> Path | None:
    """As :func:`materialize`, but None when nothing is published at a gs:// ``uri`` (its listing
    is read once, to decide and to fetch)."""
    if not is_remote(uri):
        return Path(str(uri).removeprefix("file://"))
    uri = str(uri)
    found = _listing(uri)
    if found is None:
        return None
    listing, data = found
    target = cache_root(cache_dir) / hashlib.sha256(data).hexdigest()[:32]
    if (target / LISTING).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _download(uri, listing, tmp, progress)
        (tmp / LISTING).write_bytes(data)  # last: a folder with it is complete
        try:
            os.replace(tmp, target)
        except OSError:  # another process filled the same version first: use its copy
            if not (target / LISTING).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download(uri: str, listing: dict, into: Path, progress: bool) -> None:
    storage = open_storage(uri)
    files = listing["files"]
    total = sum(int(f["bytes"]) for f in files.values())
    with tqdm(total=total, desc=f"fetch {uri}", unit="B", unit_scale=True, disable=not progress) as bar:
        for name, expected in sorted(files.items()):
            path = into / check_key(name, storage.where(LISTING))  # no name leaves the folder
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                storage.download(name, path)
            except SealsError as e:  # the only error a download raises itself: no such object
                raise SealsError(
                    f"{storage.where(name)}: listed in {LISTING} but missing (a partial or "
                    "concurrent publish; publish it again)"
                ) from e
            if path.stat().st_size != int(expected["bytes"]) or file_sha256(path) != expected["sha256"]:
                raise SealsError(
                    f"{storage.where(name)}: does not match its checksum in {LISTING} (changed "
                    "while it was read, or damaged); run again, or publish it again"
                )
            bar.update(int(expected["bytes"]))


def read_file(uri: str | Path, name: str) -> bytes | None:
    """One small file of a published folder, read alone (its checksum checked against the
    listing), or None when nothing is published there or the folder has no such file."""
    if not is_remote(uri):
        path = Path(str(uri).removeprefix("file://")) / name
        return path.read_bytes() if path.is_file() else None
    found = _listing(str(uri))
    if found is None or name not in found[0]["files"]:
        return None
    storage = open_storage(str(uri))
    data = storage.read_bytes(name, MAX_LISTING_BYTES)
    if hashlib.sha256(data).hexdigest() != found[0]["files"][name]["sha256"]:
        raise SealsError(f"{storage.where(name)}: does not match its checksum in {LISTING}")
    return data


def read_manifest_at(uri: str | Path, expected_format: str) -> dict | None:
    """The manifest.json of a published folder, read alone (to decide whether to rebuild), or
    None when nothing is published there; a wrong format is an error naming the file."""
    data = read_file(uri, "manifest.json")
    if data is None:
        return None
    return parse_manifest(data, f"{str(uri).rstrip('/')}/manifest.json", expected_format)


@contextmanager
def output_folder(
    uri: str | Path, content_format: str, cache_dir: str | Path | None = None, progress: bool = True
) -> Iterator[Path]:
    """Where a writer writes a folder that ends up at ``uri``: ``uri`` itself when local (the
    writer publishes atomically there); for gs://, a local staging folder, published on success
    and kept as the cache's copy of that version (so this machine does not download it again).
    Refuses a target holding something else before the writer starts (:func:`check_target`)."""
    check_target(uri, content_format)
    if not is_remote(uri):
        yield Path(str(uri).removeprefix("file://"))
        return
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=root))
    local = staging / "out"
    try:
        yield local
        if not local.is_dir():
            raise SealsError(f"{uri}: the writer produced nothing to publish")
        data = _listing_bytes(publish(local, str(uri), content_format, progress))
        (local / LISTING).write_bytes(data)
        target = root / hashlib.sha256(data).hexdigest()[:32]
        with suppress(OSError):  # an OSError: this version is in the cache already
            os.replace(local, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
