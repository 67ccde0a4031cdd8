"""A real Label Studio server for the tests and `make e2e`: the pinned release, installed once into
its own virtualenv (it pins Django and friends differently from this project, so never into
.venv), started offline on a free 127.0.0.1 port with a temporary data directory; and a person
using it through its REST API.

Also runnable by hand: ``python tests/labelstudio_server.py`` installs it (if needed), starts it
and prints the URL and token until interrupted.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

VERSION = "1.23.2"
VENV = Path(
    os.environ.get("SEALS_LABEL_STUDIO_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "seals-al"
    / f"label-studio-{VERSION}"
)
COMPLETE = ".seals-al-complete"  # written last: a venv without it is a broken install
USER, PASSWORD = "labeler@example.com", "seals-al-test-password"
START_TIMEOUT = 240.0  # the first start runs the migrations (about 45 s here)


def ensure_installed(venv: Path = VENV) -> Path:
    """The venv's ``label-studio`` executable; installs ``label-studio==VERSION`` on first use
    (about 2 minutes), once even when several processes ask at the same time."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / COMPLETE).exists():
            shutil.rmtree(venv, ignore_errors=True)
            print(f"installing label-studio=={VERSION} into {venv} (once)", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", f"label-studio=={VERSION}"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            (venv / COMPLETE).write_text(VERSION)
    return venv / "bin" / "label-studio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    data_dir: Path
    process: subprocess.Popen


@contextmanager
def running(token: str = "seals-al-test-token-0123456789abcdef") -> Iterator[Server]:
    """A started server with one user whose legacy API token is ``token``; stopped on exit."""
    executable = ensure_installed()
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="label-studio-"))
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "SSRF_PROTECTION_ENABLED": "false",  # its webhooks go to a listener on 127.0.0.1
    }
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    log = (data_dir / "server.log").open("wb")
    command = [str(executable), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--username", USER, "--password", PASSWORD, "--user-token", token]
    process = subprocess.Popen(
        [*command, "--enable-legacy-api-token"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, data_dir / "server.log")
        yield Server(url, token, data_dir, process)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(
        f"label-studio did not answer {url}/health in {START_TIMEOUT:g} s:\n{log.read_text()[-3000:]}"
    )


class Person:
    """Someone working in Label Studio, through its REST API."""

    def __init__(self, server):
        self.url = server.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {server.token}"

    def api(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def tasks(self, project: int) -> dict[str, dict]:
        answer = self.api("GET", "/api/tasks", params={"project": project, "page_size": 1000})
        return {t["data"]["seals_id"]: t for t in answer["tasks"]}

    def annotate(self, task: int, choice: str | None, cancelled: bool = False) -> int:
        result = [] if choice is None else [choice_result(choice)]
        done = self.api(
            "POST", f"/api/tasks/{task}/annotations", json={"result": result, "was_cancelled": cancelled}
        )
        return done["id"]


def choice_result(choice: str) -> dict:
    """A single-choice result for the labeling config seals-al creates."""
    return {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}


if __name__ == "__main__":
    with running() as server:
        print(f"LABEL_STUDIO_URL={server.url}\nLABEL_STUDIO_API_KEY={server.token}")
        print(f"login: {USER} / {PASSWORD}")
        with suppress(KeyboardInterrupt):
            server.process.wait()
