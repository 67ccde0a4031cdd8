"""A campaign's files under one root, by key: the interface every backend gives, the keys it
accepts, and the errors it raises.

Keys are relative POSIX paths; a key that could leave the root (``..``, an absolute path, a
backslash, an empty or hidden part) is an error naming the key, so ids and URIs from untrusted
files cannot escape the campaign. Components starting with a dot are reserved for temporary files.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from seals_al.errors import SealsError, shown


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
