"""URIs: local paths and ``gs://`` told apart in one place, split into folder and name; where the
cache lives."""

from __future__ import annotations

import os
from pathlib import Path

from seals_al.errors import SealsError


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
