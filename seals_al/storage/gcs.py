"""``gs://bucket/prefix`` as storage (google-cloud-storage): single-object uploads, which are
all-or-nothing; write-once and compare-and-swap by generation preconditions; reads by range."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import BinaryIO

from seals_al.errors import SealsError
from seals_al.ranges import RemoteObject, concurrently, count_alone
from seals_al.storage.base import AlreadyExistsError, ChangedError, NotFoundError, Storage, check_key


class GCSStorage(Storage):
    """gs://bucket/prefix through google-cloud-storage (STORAGE_EMULATOR_HOST is respected).

    Every GET it makes is counted in :func:`seals_al.ranges.stats`, each as a batch of one; ranged
    reads of published files go through :meth:`object` and :mod:`seals_al.ranges` instead."""

    def __init__(self, uri: str, client=None):
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        if not bucket:
            raise SealsError(f"{uri}: expected gs://bucket/prefix")
        # Checked before any client or network call: a bad name fails now, not after retries.
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
            raise SealsError(f"{uri}: {bucket!r} is not a GCS bucket name")
        if prefix.strip("/"):
            check_key(prefix.strip("/"), uri)
        self.uri = f"gs://{bucket}/{prefix.strip('/')}".rstrip("/")
        self.bucket_name = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._client = client or _gcs_client()
        self._bucket = self._client.bucket(bucket)

    def _blob(self, key: str, generation: int | None = None):
        return self._bucket.blob(self.prefix + check_key(key, self.uri), generation=generation)

    def _metadata(self, key: str):
        """The object's metadata (one GET), or None when it is not there."""
        blob = self._bucket.get_blob(self.prefix + check_key(key, self.uri))
        count_alone(0)
        return blob

    def object(self, key: str, generation: int, size: int) -> RemoteObject:
        """One generation of an object, for ranged reads (:mod:`seals_al.ranges`)."""
        return RemoteObject(self.bucket_name, self.prefix + check_key(key, self.uri), generation, size)

    def generation(self, key: str) -> tuple[int, int]:
        """(generation, size) of the object as it is now; a missing key is an error."""
        blob = self._metadata(key)
        if blob is None:
            raise NotFoundError(f"{self.where(key)}: no such object")
        return int(blob.generation), int(blob.size or 0)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable

        # One GET: with a limit, only up to one byte past it is asked for.
        start = None if max_bytes is None else 0
        try:
            data = self._blob(key).download_as_bytes(start=start, end=max_bytes, raw_download=True)
        except NotFound as e:
            count_alone(0)
            raise NotFoundError(f"{self.where(key)}: no such object") from e
        except RequestRangeNotSatisfiable:  # a byte range of an empty object
            data = b""
        count_alone(len(data))
        if max_bytes is not None and len(data) > max_bytes:
            blob = self._metadata(key)  # the size, for the message
            self._too_big(key, int(blob.size) if blob is not None else len(data), max_bytes)
        return data

    def prefetch(self, keys: Iterable[str], max_bytes: int | None = None) -> None:
        """Read every key not held yet concurrently: one round trip for them all."""
        wanted = [key for key in dict.fromkeys(keys) if key not in self._held]
        concurrently([partial(self._hold, key, max_bytes) for key in wanted])

    def _write(self, key: str, data: bytes, once: bool) -> None:
        if once:
            self._create(key, data)
        else:
            self._blob(key).upload_from_string(data)

    def _create(self, key: str, data: bytes) -> str:
        from google.api_core.exceptions import PreconditionFailed

        blob = self._blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=0)
        except PreconditionFailed as e:
            raise AlreadyExistsError(f"{self.where(key)}: already written") from e
        if blob.generation is None:  # GCS returns it with the upload; an emulator may not
            blob.reload()
            count_alone(0)
        return str(blob.generation)

    def download(self, key: str, path: Path) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self._blob(key).download_to_filename(str(path))
        except NotFound as e:
            count_alone(0)
            raise NotFoundError(f"{self.where(key)}: no such object") from e
        count_alone(path.stat().st_size)

    def upload_range(self, path: Path, offset: int, length: int, key: str) -> int:
        """Write ``length`` bytes of a local file, from ``offset``, as the object ``key`` (one
        object: all or nothing); returns its generation."""
        self._held.pop(key, None)
        blob = self._blob(key)
        with open(path, "rb") as f:
            blob.upload_from_file(_Window(f, offset, length), size=length)
        if blob.generation is None:  # GCS returns it with the upload; an emulator may not
            blob.reload()
            count_alone(0)
        return int(blob.generation)

    def download_to(self, key: str, out: BinaryIO) -> None:
        """Append the object's bytes to an open file (streamed); a missing key is an error."""
        from google.api_core.exceptions import NotFound

        start = out.tell()
        try:
            self._blob(key).download_to_file(out, raw_download=True)
        except NotFound as e:
            count_alone(0)
            raise NotFoundError(f"{self.where(key)}: no such object") from e
        count_alone(out.tell() - start)

    def _upload(self, path: Path, key: str) -> int | None:
        blob = self._blob(key)
        blob.upload_from_filename(str(path))  # one object: all or nothing
        return None if blob.generation is None else int(blob.generation)

    def _exists(self, key: str) -> bool:
        exists = self._blob(key).exists()
        count_alone(0)
        return exists

    def _delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with suppress(NotFound):
            self._blob(key).delete()

    def version(self, key: str) -> str:
        blob = self._metadata(key)
        if blob is None:
            raise NotFoundError(f"{self.where(key)}: no such object")
        return f"generation {blob.generation}, {blob.size} bytes"

    # Compare-and-swap on GCS: a token is the object's generation, and every conditional call
    # carries if_generation_match, which GCS checks atomically.
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        from google.api_core.exceptions import NotFound

        blob = self._blob(key)
        try:  # one GET: the generation comes back with the bytes, so the two always agree
            data = blob.download_as_bytes(raw_download=True)
        except NotFound as e:
            count_alone(0)
            raise NotFoundError(f"{self.where(key)}: no such object") from e
        count_alone(len(data))
        if blob.generation is None:  # GCS sends x-goog-generation; an emulator might not
            raise SealsError(f"{self.where(key)}: the server named no generation for the object")
        return data, str(blob.generation)

    def _replace_if(self, key: str, data: bytes, token: str) -> str:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = self._blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=int(token))
        except (NotFound, PreconditionFailed) as e:
            raise ChangedError(f"{self.where(key)}: changed since it was read") from e
        if blob.generation is None:  # GCS returns it with the upload; an emulator may not
            blob.reload()
            count_alone(0)
        return str(blob.generation)

    def _delete_if(self, key: str, token: str) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self._blob(key).delete(if_generation_match=int(token))
        except (NotFound, PreconditionFailed) as e:
            raise ChangedError(f"{self.where(key)}: changed since it was read") from e

    def list(self, prefix: str = "", *, hidden: bool = False) -> list[str]:
        start = self.prefix + (check_key(prefix, self.uri).rstrip("/") + "/" if prefix else "")
        names = []
        for page in self._client.list_blobs(self._bucket, prefix=start).pages:
            count_alone(0)
            names += [blob.name for blob in page]
        return sorted(name[len(self.prefix) :] for name in names)


_clients: dict[str, object] = {}


class _Window(io.RawIOBase):
    """A range of an open file, as a file of its own (position 0 at the range's start): what a
    resumable upload, which seeks back to the start to retry, takes for one part of a file."""

    def __init__(self, f: BinaryIO, offset: int, length: int):
        self._f, self._offset, self._length, self._at = f, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._length}[whence]
        self._at = min(max(base + position, 0), self._length)
        return self._at

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")[: self._length - self._at]
        self._f.seek(self._offset + self._at)
        got = self._f.readinto(view)
        self._at += got
        return got


def _gcs_client():
    """One google-cloud-storage client per process (per emulator host), its connection pool big
    enough for :func:`seals_al.ranges.concurrently`: every gs:// storage reuses its connections."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if emulator not in _clients:
        _clients[emulator] = _new_gcs_client(emulator)
    return _clients[emulator]


def _new_gcs_client(emulator: str):
    import requests
    from google.cloud import storage

    from seals_al.ranges import CONCURRENCY

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "local")
        client = storage.Client(project=project, credentials=AnonymousCredentials())
    else:
        from google.auth.exceptions import DefaultCredentialsError

        try:
            client = storage.Client()
        except DefaultCredentialsError as e:
            raise SealsError(
                "gs://: no Google Cloud credentials found (set GOOGLE_APPLICATION_CREDENTIALS, or run "
                "where Application Default Credentials exist, e.g. a pod with Workload Identity)"
            ) from e
    # The library's own session holds 10 connections; concurrent reads need as many as run at once
    # (the way googleapis/python-storage#253 recommends).
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=CONCURRENCY)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client
