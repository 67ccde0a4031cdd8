"""``seals-al listen``: a small HTTP service that receives the labeling tool's webhooks and continues
each campaign once its open batch is answered (:mod:`seals_al.labeltools.events`).

Routes: ``POST /hooks/<campaign id>`` (the id: :func:`campaign_id` of the campaign's URI, printed at
start) and ``GET /healthz``. A webhook must carry the shared secret in the header
:data:`SECRET_HEADER` (from ``$SEALS_LISTEN_SECRET``; compared in constant time); else 401 and
nothing happens. The answer is immediate (202: Label Studio waits one second for it); the work is
done by one thread per campaign, which coalesces a burst of events into one look at the tool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from seals_al.errors import SealsError

SECRET_HEADER = "X-Seals-Secret"
ENV_SECRET = "SEALS_LISTEN_SECRET"
MAX_BODY_BYTES = 4 * 2**20  # a webhook with a task's payload is a few kB
REQUEST_SECONDS = 30.0  # a request's socket timeout
STOP_SECONDS = 20.0  # how long a stop waits for a look under way (Kubernetes allows 30 s)


def campaign_id(uri: str) -> str:
    """The campaign's id in a webhook URL: it names no bucket or path."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def secret_from_environment() -> str:
    secret = os.environ.get(ENV_SECRET, "").strip()
    if len(secret) < 16:
        raise SealsError(
            f"set {ENV_SECRET} to a shared secret of at least 16 characters (the webhooks carry it)"
        )
    return secret


class _Campaign:
    """One campaign's worker: events set a flag, the thread looks at the tool once per burst."""

    def __init__(self, uri: str, look: Callable[[str], str], log: Callable[[str], None]):
        self.uri, self._look, self._log = uri, look, log
        self._event = threading.Event()
        self._stopped = False
        self.looks = 0  # finished looks (tests wait on them)
        self.thread = threading.Thread(target=self._run, name=f"listen-{campaign_id(uri)}", daemon=True)
        self.thread.start()

    def poke(self) -> None:
        self._event.set()

    def stop(self, wait_seconds: float) -> bool:
        """Stop after the look under way, if any, waiting for it at most ``wait_seconds``;
        whether the worker is done (a round left running is claimed: the claim is taken over
        later, and an interrupted round leaves the previous one whole)."""
        self._stopped = True
        self._event.set()
        self.thread.join(timeout=wait_seconds)
        return not self.thread.is_alive()

    def _run(self) -> None:
        while True:
            self._event.wait()
            if self._stopped:
                return
            self._event.clear()
            try:
                self._log(f"{self.uri}: {self._look(self.uri)}")
            except SealsError as e:  # reported; the next event tries again
                self._log(f"{self.uri}: {e}")
            self.looks += 1


class Listener:
    """The service: ``serve_forever()``, or ``start()`` in a thread and ``stop()``."""

    def __init__(
        self,
        campaigns: Sequence[str],
        look: Callable[[str], str],
        secret: str,
        host: str = "127.0.0.1",
        port: int = 8080,
        log: Callable[[str], None] | None = None,
        request_seconds: float = REQUEST_SECONDS,
    ):
        if not campaigns:
            raise SealsError("listen: give at least one campaign")
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.campaigns = {campaign_id(uri): _Campaign(uri, look, self.log) for uri in campaigns}
        self.secret = secret.encode()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = request_seconds  # a client that stops sending does not hold a thread forever

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per event is logged by the listener itself

            def _answer(self, status: HTTPStatus, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._answer(HTTPStatus.OK, {"campaigns": len(listener.campaigns)})
                else:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": "no such route"})

            def do_POST(self) -> None:
                status, body = listener.receive(self.path, self.headers, self.rfile)
                self._answer(status, body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def hook_url(self, uri: str, base: str | None = None) -> str:
        """Where the tool sends ``uri``'s events: ``base`` (the address the tool reaches this
        service at; default: where it listens) + ``/hooks/<id>``."""
        return f"{(base or self.url).rstrip('/')}/hooks/{campaign_id(uri)}"

    def receive(self, path: str, headers, stream) -> tuple[HTTPStatus, dict]:
        """One webhook: checked (route, secret, size, JSON), then its campaign poked."""
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] != "hooks" or parts[1] not in self.campaigns:
            return HTTPStatus.NOT_FOUND, {"error": "no such campaign"}
        given = (headers.get(SECRET_HEADER) or "").encode()
        if not hmac.compare_digest(given, self.secret):
            self.log(f"{path}: refused a request without the shared secret")
            return HTTPStatus.UNAUTHORIZED, {"error": f"missing or wrong {SECRET_HEADER}"}
        try:
            length = int(headers.get("Content-Length") or 0)
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"}
        if length > MAX_BODY_BYTES:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"over {MAX_BODY_BYTES} bytes"}
        try:
            event = json.loads(stream.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            return HTTPStatus.BAD_REQUEST, {"error": "the body is not JSON"}
        action = event.get("action") if isinstance(event, dict) else None
        campaign = self.campaigns[parts[1]]
        campaign.poke()  # whatever the event says, the tool is asked: late or doubled events are harmless
        return HTTPStatus.ACCEPTED, {"campaign": parts[1], "action": action, "queued": True}

    def catch_up(self) -> None:
        """Look at every campaign once (an event may have come while the service was down)."""
        for campaign in self.campaigns.values():
            campaign.poke()

    def start(self, catch_up: bool = True) -> Listener:
        """Serve in a thread of its own (``stop()`` ends it); ``catch_up``: look at every campaign
        once now."""
        self._thread = threading.Thread(target=self.server.serve_forever, name="listen", daemon=True)
        self._thread.start()
        if catch_up:
            self.catch_up()
        return self

    def stop(self, wait_seconds: float = STOP_SECONDS) -> None:
        """Stop serving (``serve_forever`` ends, in whichever thread it runs), then stop each
        campaign's worker after its look under way (logged when it does not end in time)."""
        if self._thread is not None:
            self.server.shutdown()  # from another thread than serve_forever's, as it must be
        self.server.server_close()
        for campaign in self.campaigns.values():
            if not campaign.stop(wait_seconds):
                self.log(f"{campaign.uri}: stopped during a look; its round is claimed until taken over")
