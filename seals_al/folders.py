"""Folders read where they are (:mod:`seals_al.published`): a local folder, or a published one on
gs:// whose files are read by range (:func:`open_folder`, what a round does), or whole into the
cache when a task needs them on its disk."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from seals_al import ranges
from seals_al.arrays import ACCESS, ArrayFile, dtype_of, open_array
from seals_al.errors import SealsError
from seals_al.published import LISTING, MAX_LISTING_BYTES, cache_root, object_parts, parsed_listing
from seals_al.storage import open_storage
from seals_al.storage.base import NotFoundError
from seals_al.storage.gcs import GCSStorage
from seals_al.storage.uris import is_remote, local_path


class Folder:
    """A folder of files to read: a local directory, or a published folder on gs:// read by range
    (:class:`RemoteFolder`)."""

    uri: str  # a local path or gs:// URI: for messages and records

    def where(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    @property
    def local(self) -> Path | None:
        """The directory on this machine's disk, or None for a remote folder."""
        return None

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def published_listing(self) -> bytes | None:
        """The listing this folder was published with (None for a local folder that never was)."""
        return None

    def source(self, name: str) -> ranges.Source:
        """The file, for reads by range."""
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        """The whole file (a manifest, an id table); a missing one is an error naming it."""
        raise NotImplementedError

    def array(self, name: str, access: str = "rows") -> np.ndarray | ArrayFile:
        """A .npy file opened as ``access`` says (:data:`seals_al.arrays.ACCESS`)."""
        raise NotImplementedError


class LocalFolder(Folder):
    def __init__(self, path: str | Path):
        self.path = local_path(path)
        self.uri = str(self.path)

    @property
    def local(self) -> Path:
        return self.path

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def published_listing(self) -> bytes | None:
        listing = self.path / LISTING  # a materialized copy keeps it
        return listing.read_bytes() if listing.is_file() else None

    def source(self, name: str) -> ranges.Source:
        return ranges.LocalFile(self.path / name)

    def read_bytes(self, name: str) -> bytes:
        path = self.path / name
        if not path.is_file():
            raise SealsError(f"{path}: no such file")
        return path.read_bytes()

    def array(self, name: str, access: str = "rows") -> np.ndarray | ArrayFile:
        return open_array(self.path / name, access)


class RemoteFolder(Folder):
    """A published folder on gs://, read where it is: each file by range, pinned to the
    generation its listing records (a listing written before generations were recorded: the
    object's metadata, read once, whose size must match the listing's)."""

    def __init__(self, uri: str, listing: dict, held: dict[str, bytes] | None = None, raw: bytes = b""):
        self.uri = uri.rstrip("/")
        self.listing = listing
        self.listing_bytes = raw  # the listing as published (what names this version)
        self._storage = open_storage(self.uri)
        self._sources: dict[str, ranges.Source] = {}
        self._held = dict(held or {})  # small files read with the listing, checked

    def _entry(self, name: str) -> dict:
        entry = self.listing["files"].get(name)
        if entry is None:
            raise SealsError(f"{self.where(name)}: not among the files {self.where(LISTING)} lists")
        return entry

    def has(self, name: str) -> bool:
        return name in self.listing["files"]

    def published_listing(self) -> bytes | None:
        return self.listing_bytes

    def source(self, name: str) -> ranges.Source:
        if name not in self._sources:
            entry = self._entry(name)
            storage = self._storage
            if not isinstance(storage, GCSStorage):
                raise SealsError(f"{self.uri}: not on object storage")
            if "parts" in entry:  # stored as parts: read across them
                pieces = zip(object_parts(name, int(entry["bytes"])), entry["parts"], strict=True)
                objects = [
                    storage.object(part, int(listed["generation"]), length)
                    for (part, _, length), listed in pieces
                ]
                self._sources[name] = ranges.Parted(objects, self.where(name))
                return self._sources[name]
            generation = entry.get("generation")
            if generation is None:
                generation, size = storage.generation(name)
                if size != int(entry["bytes"]):
                    raise ranges.ReplacedError(
                        f"{self.where(name)}: {size:,} bytes, but {LISTING} lists {int(entry['bytes']):,} "
                        "(changed since it was published); publish it again"
                    )
            self._sources[name] = storage.object(name, int(generation), int(entry["bytes"]))
        return self._sources[name]

    def read_bytes(self, name: str) -> bytes:
        if name in self._held:
            return self._held[name]
        data = self.source(name).read(0, int(self._entry(name)["bytes"]))
        if hashlib.sha256(data).hexdigest() != self._entry(name)["sha256"]:
            raise ranges.ReplacedError(
                f"{self.where(name)}: does not match its checksum in {LISTING} (changed since it "
                "was published, or damaged); publish it again"
            )
        return data

    def array(self, name: str, access: str = "rows") -> np.ndarray | ArrayFile:
        if access not in ACCESS:
            raise SealsError(f"unknown array access {access!r}; use one of {', '.join(ACCESS)}")
        if name in self._held:  # read with the listing: in memory already
            return np.load(io.BytesIO(self._held[name]), allow_pickle=False)
        header = self._entry(name).get("npy")
        if header is None:  # listed before headers were: read it (one request)
            return ArrayFile(self.source(name))
        shape = tuple(int(n) for n in header["shape"])
        return ArrayFile(self.source(name), (shape, dtype_of(header["dtype"]), int(header["offset"])))


def open_folder(
    uri: str | Path,
    cache_dir: str | Path | None = None,
    preload: Sequence[str] = (),
    listing: bytes | None = None,
    held: dict[str, bytes] | None = None,
) -> Folder | None:
    """The folder at ``uri`` to read where it is: a local folder as it is; a gs:// one as
    published now, from this machine's cache when it holds that version (materialized earlier),
    else remotely (:class:`RemoteFolder`). None when nothing is published at a gs:// ``uri``.

    ``preload``: small files of it read with its listing, in one batch (read then as checked
    against the listing's checksums, never again). ``listing`` (and ``held`` files): its
    listing's bytes (and some files'), when the caller holds them (a prepared folder records its
    store's): no request to open it."""
    if not is_remote(uri):
        return LocalFolder(uri)
    uri = str(uri).rstrip("/")
    storage = open_storage(uri)
    held = dict(held or {})
    if listing is None:
        names = [LISTING, *preload]

        def read(name: str) -> bytes | None:
            try:
                return storage.read_bytes(name, MAX_LISTING_BYTES)
            except NotFoundError:
                return None

        found = ranges.concurrently([partial(read, name) for name in names])
        listing = found[0]
        if listing is None:
            return None
        held |= {name: data for name, data in zip(preload, found[1:], strict=True) if data is not None}
    parsed = parsed_listing(listing, storage.where(LISTING))
    cached = cache_root(cache_dir) / hashlib.sha256(listing).hexdigest()[:32]
    if (cached / LISTING).is_file():
        return LocalFolder(cached)
    for name, data in list(held.items()):
        entry = parsed["files"].get(name)
        if entry is None or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            del held[name]  # not this version's (published again meanwhile): read it pinned, later
    return RemoteFolder(uri, parsed, held, listing)


def open_published(
    uri: str | Path, kind: str, cache_dir: str | Path | None = None, preload: Sequence[str] = ()
) -> Folder:
    """As :func:`open_folder`; nothing published there is an error naming ``uri``."""
    folder = open_folder(uri, cache_dir, preload)
    if folder is None:
        raise SealsError(
            f"{uri}: not {kind}: no {LISTING} there (nothing was published, or its writer did not "
            "finish; run the step that writes it)"
        )
    return folder
