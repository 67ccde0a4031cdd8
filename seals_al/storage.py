"""Storage by URI: a local folder or ``gs://bucket/prefix``, and atomic local writes.

A :class:`Storage` holds a campaign's files under one root. Keys are relative POSIX paths;
a key that could leave the root (``..``, an absolute path, a backslash, an empty or hidden part)
is an error naming the key, so ids and URIs from untrusted files cannot escape the campaign.
Components starting with a dot are reserved for temporary files.

Writes are atomic: locally a temp file in the same folder, then ``os.replace``; on GCS a single
object upload, which is all-or-nothing. ``once=True`` makes a write fail if the key exists
(locally a hard link, which refuses an existing name; on GCS ``if_generation_match=0``).

Why not fsspec: the product needs five operations on two backends, with write-once and exact
error messages; a small module over google-cloud-storage keeps both in view.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from seals_al.errors import SealsError, shown
from seals_al.ranges import RemoteObject, concurrently, count_alone


class AlreadyExistsError(SealsError):
    """A write-once key was written already."""


class NotFoundError(SealsError):
    """A key that was to be read is not there."""


class ChangedError(SealsError):
    """A conditional write or delete found the object changed (or gone) since it was read."""


class TooLargeError(SealsError):
    """An object is larger than the reader's limit; it was not read."""

    def __init__(self, message: str, size: int):
        super().__init__(message)
        self.size = size


CAS_SUFFIX = ".cas"  # the hidden file a local compare-and-swap holds its flock on


def _temp_prefix(path: Path) -> str:
    """A hidden temporary name beside ``path``, short enough for any name ``path`` may have."""
    return f".{path.name[:100]}."


def written_as(file_name: str, name: str) -> bool:
    """Whether ``file_name`` is ``name`` or a leftover of an atomic write of ``name`` (a process
    killed mid-write leaves its hidden temporary file beside the target)."""
    return file_name == name or file_name.startswith(_temp_prefix(Path(name)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file: 0644 under umask 022


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on
    failure it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=path.suffix[:16], dir=path.parent)
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a written file gets what the umask allows
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_replaceable(path: str | Path, manifest_format: str) -> None:
    """Refuse, before any work, a folder that publishing ``manifest_format`` output there would
    delete something the command did not write: it may be absent, empty, or an earlier output of
    the same kind (its manifest.json says ``manifest_format``)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise SealsError(f"{path}: exists and is not a folder; choose another output")
    if not any(path.iterdir()):
        return
    try:
        found = json.loads((path / "manifest.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != manifest_format:
        held = f"holds a {shown(found)} output" if found is not None else "holds no manifest.json"
        raise SealsError(
            f"{path}: exists, is not empty and {held}, not an earlier {manifest_format} output; "
            "publishing replaces the folder whole, so choose another"
        )


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


@contextmanager
def atomic_dir(path: str | Path, manifest_format: str) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it takes the place of ``path``
    (an earlier output of the same kind there is removed first: see :func:`check_replaceable`),
    on failure it is removed. A reader sees the old directory or the new one complete, never half
    of one."""
    path = Path(path)
    check_replaceable(path, manifest_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: str | Path, expected_format: str, kind: str) -> dict:
    """Read ``directory/manifest.json`` and check its format; errors name the file and the kind."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise SealsError(f"{directory}: not {kind} (no manifest.json)")
    return parse_manifest(path.read_bytes(), path, expected_format)


def parse_manifest(data: bytes, where: str | Path, expected_format: str) -> dict:
    """A manifest's JSON, checked to be of ``expected_format``; errors name ``where``."""
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as e:
        raise SealsError(f"{where}: invalid JSON: {e.msg}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise SealsError(f"{where}: format {found!r}, expected {expected_format!r}")
    return manifest


def file_sha256(path: Path) -> str:
    """A file's sha256, read a block at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: Path, shown: str | Path | None = None) -> None:
    """Raise unless ``path`` is a file, saying which it is: missing, or a folder."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise SealsError(f"{shown or path}: {what}")


def file_version(path: Path, shown: str | Path | None = None) -> str:
    """A local file's size and modification time: what :meth:`Storage.version` reports."""
    require_file(path, shown)
    st = path.stat()
    return f"{st.st_size} bytes, modified {st.st_mtime_ns}"


def check_output_folder(out: Path, ours: Callable[[tuple[str, ...], Path], bool], what: str) -> None:
    """An output folder is new, empty, or holds only what the command itself writes (``ours`` of
    each path's parts under ``out``, and the path); anything else there, a campaign for one, is
    refused before anything is written, so nothing that the command did not write is replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SealsError(f"{out}: exists and is not a folder; choose another --out")
    foreign = next((p for p in out.rglob("*") if not ours(p.relative_to(out).parts, p)), None)
    if foreign is not None:
        raise SealsError(
            f"{out}: exists, is not empty and holds no earlier {what} ({foreign.relative_to(out)} "
            f"is not a {what}'s output); choose another --out"
        )


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, creating parent directories."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


MAX_KEY_PART_BYTES = 255  # what local file systems allow for one name
MAX_KEY_BYTES = 900  # GCS allows 1,024 bytes for a whole object name, the prefix included


def check_key(key: str, root: str) -> str:
    """Return ``key`` if it is a safe relative POSIX path that every backend can store, else raise
    naming the key (shortened) and the root."""
    parts = key.split("/")
    bad = (
        not key
        or "\\" in key
        or key.startswith("/")
        or any(ord(c) < 32 or ord(c) == 127 for c in key)  # control characters, NUL included
        or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
    )
    if bad:
        raise SealsError(f"{root}: key {shown(key, 80)} is not a plain relative path inside the campaign")
    if len(key.encode()) > MAX_KEY_BYTES or any(len(p.encode()) > MAX_KEY_PART_BYTES for p in parts):
        raise SealsError(
            f"{root}: key {shown(key, 80)} is too long (at most {MAX_KEY_PART_BYTES} bytes a name, "
            f"{MAX_KEY_BYTES} in all)"
        )
    return key


class Storage(ABC):
    """Files under one root URI, addressed by relative keys.

    :meth:`prefetch` reads several keys at once (on GCS: concurrently, one round trip) and keeps
    them: later reads of those keys by this object are served from memory, and its own writes
    keep what it holds current (:meth:`hold_writes`: what it writes too). A stage prefetches what
    it will read of its campaign while it holds the campaign's lease, so nobody else changes
    those keys meanwhile."""

    uri: str

    @property
    def _held(self) -> dict[str, bytes | None]:
        """Keys prefetched: their bytes, or None for a key that was not there."""
        return self.__dict__.setdefault("_held_reads", {})

    def read_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; a missing key, or one larger than ``max_bytes``, is an error."""
        if key in self._held:
            data = self._held[key]
            if data is None:
                raise NotFoundError(f"{self.where(key)}: no such object")
            self._too_big(key, len(data), max_bytes)
            return data
        return self._read(key, max_bytes)

    def leads_outside(self, key: str) -> bool:
        """Whether ``key`` names a link that leads out of the root (only a local disk has links)."""
        return False

    def exists(self, key: str) -> bool:
        if key in self._held:
            return self._held[key] is not None
        return self._exists(key)

    def prefetch(self, keys: Iterable[str], max_bytes: int | None = None) -> None:
        """Read these keys now and keep them (a missing one as missing) for later reads; a key
        over ``max_bytes`` is left unread (a later read finds it too large, unread)."""
        for key in dict.fromkeys(keys):
            if key not in self._held:
                self._hold(key, max_bytes)

    def forget(self) -> None:
        """Let go of every key held: later reads go to storage again (a new stage begins)."""
        self._held.clear()

    def _hold(self, key: str, max_bytes: int | None) -> None:
        try:
            self._held[key] = self._read(key, max_bytes)
        except NotFoundError:
            self._held[key] = None
        except TooLargeError:
            pass

    def write_bytes(self, key: str, data: bytes, *, once: bool = False) -> None:
        """Write atomically; with ``once``, raise :class:`AlreadyExistsError` if the key exists.
        With :meth:`hold_writes`, this object's later reads of the key are served what it wrote."""
        self._held.pop(key, None)
        self._write(key, data, once)
        if self.__dict__.get("_holds_writes"):
            self._held[key] = bytes(data)

    def hold_writes(self) -> None:
        """Keep what this object writes for its own later reads: for the one writer of its keys
        (a stage holding its campaign's lease)."""
        self.__dict__["_holds_writes"] = True

    def create(self, key: str, data: bytes) -> str:
        """Write a key that must not exist yet (else :class:`AlreadyExistsError`); returns the
        new version's token (for :meth:`replace_if` and :meth:`delete_if`)."""
        self._held.pop(key, None)
        return self._create(key, data)

    def upload(self, path: Path, key: str) -> int | None:
        """Write a local file's bytes to the key (streamed), atomically; returns the new object's
        generation on GCS (None locally)."""
        self._held.pop(key, None)
        return self._upload(path, key)

    def delete(self, key: str) -> None:
        """Remove a key if it exists."""
        self._held.pop(key, None)
        self._delete(key)

    def replace_if(self, key: str, data: bytes, token: str) -> str:
        """Write ``data`` only if the object is still the version ``token`` names (a
        compare-and-swap); raise :class:`ChangedError` otherwise. Returns the new version's token."""
        self._held.pop(key, None)
        return self._replace_if(key, data, token)

    def delete_if(self, key: str, token: str) -> None:
        """Delete the object only if it is still the version ``token`` names; else
        :class:`ChangedError`."""
        self._held.pop(key, None)
        self._delete_if(key, token)

    @abstractmethod
    def _read(self, key: str, max_bytes: int | None) -> bytes: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _write(self, key: str, data: bytes, once: bool) -> None: ...

    @abstractmethod
    def _create(self, key: str, data: bytes) -> str: ...

    @abstractmethod
    def _upload(self, path: Path, key: str) -> int | None: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _replace_if(self, key: str, data: bytes, token: str) -> str: ...

    @abstractmethod
    def _delete_if(self, key: str, token: str) -> None: ...

    @abstractmethod
    def download(self, key: str, path: Path) -> None:
        """Copy the object to a local file (streamed, never whole in memory); missing: an error."""

    @abstractmethod
    def list(self, prefix: str = "", *, hidden: bool = False) -> list[str]:
        """Keys under ``prefix`` (a folder-like key, or "" for all), sorted. A local folder's
        hidden files (a name starting with a dot: temporary files of writes, editors' and
        desktops' own files) are left out unless ``hidden``; the guards of this storage's
        compare-and-swap always are. Object storage lists every object (no name is hidden there)."""

    @abstractmethod
    def version(self, key: str) -> str:
        """What changes whenever the object does, read without reading it: its size and
        modification time (a local file), its generation (GCS). A missing key is an error."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and a token of this exact version, for :meth:`replace_if` and
        :meth:`delete_if`; a missing key is an error."""

    def read_text(self, key: str, max_bytes: int | None = None) -> str:
        data = self.read_bytes(key, max_bytes)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SealsError(f"{self.where(key)}: not valid UTF-8 ({e.reason} at byte {e.start})") from e

    def read_json(self, key: str, max_bytes: int | None = None) -> object:
        try:
            return json.loads(self.read_text(key, max_bytes))
        except json.JSONDecodeError as e:
            raise SealsError(f"{self.where(key)}, line {e.lineno}: invalid JSON: {e.msg}") from e

    def write_text(self, key: str, text: str, *, once: bool = False) -> None:
        self.write_bytes(key, text.encode("utf-8"), once=once)

    def write_json(self, key: str, data: object, *, once: bool = False) -> None:
        self.write_text(key, json.dumps(data, indent=2) + "\n", once=once)

    def where(self, key: str) -> str:
        """The full URI of a key, for messages."""
        return f"{self.uri.rstrip('/')}/{key}"

    def _too_big(self, key: str, size: int, max_bytes: int | None) -> None:
        if max_bytes is not None and size > max_bytes:
            raise TooLargeError(f"{self.where(key)}: {size:,} bytes, over the limit of {max_bytes:,}", size)


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def leads_outside(self, key: str) -> bool:
        return not (self.root / check_key(key, self.uri)).resolve().is_relative_to(self.root)

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key, self.uri)
        # A symlink inside the campaign must not lead outside it.
        if not path.resolve().is_relative_to(self.root):
            raise SealsError(f"{self.uri}: key {shown(key, 80)} leads outside the campaign")
        return path

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        path = self._path(key)
        if not path.exists():
            raise NotFoundError(f"{self.where(key)}: no such file")
        require_file(path, self.where(key))
        self._too_big(key, path.stat().st_size, max_bytes)
        return path.read_bytes()

    def _create(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._exclusive(path):
            self._write(key, data, once=True)
            return self._token(path) or ""

    def _write(self, key: str, data: bytes, once: bool) -> None:
        path = self._path(key)
        if not once:
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
        os.fchmod(fd, _FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.link(tmp, path)  # refuses an existing name: an atomic create-if-absent
        except FileExistsError as e:
            raise AlreadyExistsError(f"{self.where(key)}: already written") from e
        finally:
            os.unlink(tmp)

    def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        require_file(source, self.where(key))
        shutil.copyfile(source, path)

    def _upload(self, path: Path, key: str) -> None:
        with atomic_path(self._path(key)) as tmp:
            shutil.copyfile(path, tmp)

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def version(self, key: str) -> str:
        return file_version(self._path(key), self.where(key))

    # Compare-and-swap on a local disk: the read, the comparison and the write happen under an
    # exclusive flock of a hidden file beside the key, which every process on this machine (and on
    # a shared POSIX file system honouring flock) takes first. A token is the file's inode, size and
    # modification time: os.replace gives every new version a new inode.
    @contextmanager
    def _exclusive(self, path: Path) -> Iterator[None]:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}{CAS_SUFFIX}", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    @staticmethod
    def _token(path: Path) -> str | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        with self._exclusive(path):
            token = self._token(path)
            if token is None:
                raise SealsError(f"{self.where(key)}: no such file")
            return path.read_bytes(), token

    def _replace_if(self, key: str, data: bytes, token: str) -> str:
        path = self._path(key)
        with self._exclusive(path):
            if self._token(path) != token:
                raise ChangedError(f"{self.where(key)}: changed since it was read")
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            return self._token(path) or ""

    def _delete_if(self, key: str, token: str) -> None:
        path = self._path(key)
        with self._exclusive(path):
            if self._token(path) != token:
                raise ChangedError(f"{self.where(key)}: changed since it was read")
            path.unlink()

    def list(self, prefix: str = "", *, hidden: bool = False) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            relative = path.relative_to(self.root)
            if not path.is_file() or (path.name.startswith(".") and path.name.endswith(CAS_SUFFIX)):
                continue
            if hidden or not any(part.startswith(".") for part in relative.parts):
                keys.append(PurePosixPath(relative).as_posix())
        return sorted(keys)


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


def default_cache_dir() -> Path:
    """Where derived data is cached (embedded stores, neighbour graphs, downloads):
    $SEALS_CACHE_DIR, else ~/.cache/seals-al."""
    return Path(os.environ.get("SEALS_CACHE_DIR", Path.home() / ".cache" / "seals-al"))


WORKSPACE_CACHE = "seals-al-cache"


def use_workspace(workspace: str) -> None:
    """Cache in a pipeline run's workspace (KFP's workspace path, an Argo volume claim) instead of
    the pod's own disk: every task of the run then shares what one of them downloaded or
    prepared. "" leaves $SEALS_CACHE_DIR as it is (a pod-local cache)."""
    if workspace:
        os.environ["SEALS_CACHE_DIR"] = str(Path(workspace) / WORKSPACE_CACHE)


def check_scheme(uri: str, gs_form: str) -> None:
    """Refuse a URI of a scheme other than gs:// and file:// (a local path has none)."""
    if "://" in uri and not uri.startswith(("gs://", "file://")):
        raise SealsError(f"{uri}: unsupported URI scheme (use a local path or {gs_form})")


def is_remote(uri: str | Path) -> bool:
    """Whether a URI is on object storage (gs://) or on this machine (a path, or file://): the one
    place that tells them apart; any other scheme is an error naming the URI."""
    text = str(uri)
    check_scheme(text, "gs://bucket/prefix")
    return text.startswith("gs://")


def local_path(uri: str | Path) -> Path:
    """The path on this machine that a local URI (a path, or file://) names; a gs:// URI or any
    other scheme is an error naming it."""
    if is_remote(uri):
        raise SealsError(f"{uri}: on object storage, not a path on this machine")
    return Path(str(uri).removeprefix("file://"))


def split_uri(uri: str) -> tuple[str, str]:
    """A file's URI as (its folder, its name), for :func:`open_storage` and a key: a local path
    (relative ones from the working directory) or gs://bucket/path/to/file."""
    if uri.startswith("gs://"):
        parent, _, name = uri.rstrip("/").rpartition("/")
        if not name or parent == "gs:":
            raise SealsError(f"{uri}: expected gs://bucket/path/to/file")
        return parent, name
    check_scheme(uri, "gs://bucket/path/to/file")  # as a path, s3://b/x would be a folder "s3:"
    path = local_path(uri).absolute()
    if not path.name:
        raise SealsError(f"{uri}: expected a file path")
    return str(path.parent), path.name


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
