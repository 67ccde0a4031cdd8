"""Folders shared between tasks through object storage: an embeddings store, an index, a neighbour
graph, prepared data. Writers publish; readers open them where they are, reading only the ranges
they need, or materialize a local copy in a cache (docs/ARCHITECTURE.md).

A folder published at a URI (``gs://bucket/prefix`` or a local path) holds its files and, written
last, ``published.json``::

    {"format": "seals-published/1", "content": "seals-index/1",
     "files": {"index.faiss": {"bytes": 1536045, "sha256": "...", "generation": 17966...},
               "ids.npy": {..., "npy": {"shape": [1000000], "dtype": "<i8", "offset": 128}}}}

A reader trusts nothing that ``published.json`` does not list: a folder without it is missing or
its writer did not finish, and either is a clear error naming the object.

Two ways to read one:

- :func:`seals_al.folders.open_folder` (what a round does): the listing is read (one request) and each file is
  read by range where it is (:mod:`seals_al.ranges`), pinned to the generation the listing
  records, so a file replaced since it was published is an error, never another version's bytes;
  a small file read whole is checked against its sha256. An array's header is in the listing, so
  opening a folder of arrays costs that one request. A version this machine's cache holds
  already is read there instead.
- :func:`materialize` (a process that reads it all: a simulation, an index build): the listed
  files are copied into ``CACHE/published/<sha256 of published.json>/``, every checksum checked,
  and the folder moved into place in one rename, so two processes filling the cache at once both
  end with one complete copy.

A local folder is used in place: local writers publish atomically
(:func:`seals_al.storage.files.atomic_dir`).
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

from seals_al.arrays import describe_dtype, npy_header
from seals_al.errors import SealsError, shown
from seals_al.storage import open_storage
from seals_al.storage.base import NotFoundError, check_key
from seals_al.storage.files import check_replaceable, file_sha256, parse_manifest
from seals_al.storage.gcs import GCSStorage
from seals_al.storage.uris import default_cache_dir, is_remote, local_path

FORMAT = "seals-published/1"
LISTING = "published.json"
MAX_LISTING_BYTES = 16 << 20


def _listing(uri: str) -> tuple[dict, bytes] | None:
    """A remote folder's listing and its bytes (one request); None when there is none."""
    storage = open_storage(uri)
    try:
        data = storage.read_bytes(LISTING, MAX_LISTING_BYTES)
    except NotFoundError:
        return None
    return parsed_listing(data, storage.where(LISTING)), data


def parsed_listing(data: bytes, where: str) -> dict:
    try:
        listing = json.loads(data)
    except ValueError as e:
        raise SealsError(f"{where}: not valid JSON: {e}") from e
    if (
        not isinstance(listing, dict)
        or listing.get("format") != FORMAT
        or not isinstance(listing.get("files"), dict)
    ):
        raise SealsError(f"{where}: not a {FORMAT} listing")
    return listing


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
        check_replaceable(local_path(uri), content_format)
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
    """Upload the files of a local folder to ``uri``, then its listing; the objects a previous
    listing there named and this one does not are removed afterwards. A file the previous listing
    names with the same bytes (sha256), still there as listed, is not uploaded again: an appended
    store uploads its new shards only. On gs:// a file over :data:`OBJECT_PART_BYTES` is uploaded as
    parts of that size (``NAME.part-00000`` ...), which the listing names: readers put them
    together again (:func:`materialize`) or read across them by range.

    Returns:
        The listing written.
    """
    storage = open_storage(uri)
    previous = _listing(uri)
    if previous is not None:  # readers see "not published", never old names with new bytes
        storage.delete(LISTING)
    # A folder materialized from a publish holds that publish's listing: never a file of its own.
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    names = [name for name in names if name != LISTING]
    files = {}
    total = sum((local / n).stat().st_size for n in names)
    with tqdm(total=total, desc=f"publish {uri}", unit="B", unit_scale=True, disable=not progress) as bar:
        for name in names:
            path = local / name
            entry = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            before = previous[0]["files"].get(name, {}) if previous is not None else {}
            kept = {k: before.get(k) for k in entry} == entry and _still_there(storage, name, before)
            if kept:
                entry |= {k: before[k] for k in ("generation", "parts") if k in before}
            elif isinstance(storage, GCSStorage) and entry["bytes"] > OBJECT_PART_BYTES:
                entry["parts"] = [
                    {"bytes": length, "generation": storage.upload_range(path, offset, length, part)}
                    for part, offset, length in object_parts(name, entry["bytes"])
                ]
            else:
                generation = storage.upload(path, name)
                if generation is not None:
                    entry["generation"] = generation
            files[name] = entry | _array_header(path)
            bar.update(entry["bytes"])
    listing = {"format": FORMAT, "content": content_format, "files": files}
    storage.write_bytes(LISTING, _listing_bytes(listing))
    for stale in sorted(_objects(previous[0]) - _objects(listing)) if previous else ():
        storage.delete(stale)
    return listing


OBJECT_PART_BYTES = 512 << 20  # a file published to gs:// over this size is stored as parts of this size


def object_parts(name: str, size: int) -> list[tuple[str, int, int]]:
    """The parts a file of ``size`` bytes is stored as: (object name, offset, length)."""
    return [
        (f"{name}.part-{n:05d}", offset, min(OBJECT_PART_BYTES, size - offset))
        for n, offset in enumerate(range(0, size, OBJECT_PART_BYTES))
    ]


def _objects(listing: dict) -> set[str]:
    """Every object a listing names: its files, or their parts."""
    names = set()
    for name, entry in listing["files"].items():
        parts = entry.get("parts")
        names |= {part for part, _, _ in object_parts(name, int(entry["bytes"]))} if parts else {name}
    return names


def _still_there(storage, name: str, entry: dict) -> bool:
    """Whether the objects a listing entry names are still there as listed (on gs://: each with
    its generation and size)."""
    if not entry:
        return False
    if not isinstance(storage, GCSStorage):
        return storage.exists(name)
    if "parts" in entry:
        parts = object_parts(name, int(entry["bytes"]))
        pieces = [(part, listed) for (part, _, _), listed in zip(parts, entry["parts"], strict=True)]
    else:
        pieces = [(name, {"bytes": entry["bytes"], "generation": entry.get("generation")})]
    for key, listed in pieces:
        try:
            generation, size = storage.generation(key)
        except NotFoundError:
            return False
        if size != int(listed["bytes"]) or listed.get("generation") not in (None, generation):
            return False
    return True


def _array_header(path: Path) -> dict:
    """{"npy": shape, dtype and data offset} of a .npy file (so a remote reader needs no request
    for it), {} for any other file."""
    if path.suffix != ".npy":
        return {}
    try:
        shape, dtype, offset = npy_header(path)
    except SealsError:
        return {}
    return {"npy": {"shape": list(shape), "dtype": describe_dtype(dtype), "offset": offset}}


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
        return local_path(uri)
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
                if "parts" in expected:  # put together again, part after part
                    with open(path, "wb") as out:
                        for part, _, _ in object_parts(name, int(expected["bytes"])):
                            storage.download_to(part, out)
                else:
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
        path = local_path(uri) / name
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
        yield local_path(uri)
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
