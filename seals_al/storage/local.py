"""A local folder as storage: atomic writes, write-once by hard link, compare-and-swap by flock."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from seals_al.errors import SealsError, shown
from seals_al.storage.base import AlreadyExistsError, ChangedError, NotFoundError, Storage, check_key
from seals_al.storage.files import (
    _FILE_MODE,
    CAS_SUFFIX,
    _temp_prefix,
    atomic_path,
    file_version,
    require_file,
)


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
