"""Files on this machine written atomically (a temp file in the same folder, then ``os.replace``),
folders published whole, manifests, and the checks before an output is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seals_al.errors import SealsError, shown

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
