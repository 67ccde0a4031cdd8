"""Label Studio's REST API, the few calls the tool uses, each retried with backoff.

Configuration: ``LABEL_STUDIO_URL`` (or the generic ``LABEL_TOOL_URL``, or the campaign's
``label_tool_url``; the environment wins) and ``LABEL_STUDIO_API_KEY`` (or ``LABEL_TOOL_API_KEY``),
the names Label Studio's own SDK reads. The key is a legacy token (``Authorization: Token ...``) or a
personal access token (a JWT refresh token, exchanged at ``/api/token/refresh`` for short-lived
access tokens). It is read from the environment only, and never written anywhere or printed.

Label Studio down or slow: each read is retried with exponential backoff, then fails with an error
naming the URL (a wait reports it and asks again at its next poll). A write (an import, a new
project, a webhook) is sent once: the caller reads again before sending what is missing, so a lost
answer never doubles anything. A refused token: an error naming the URL and the variable, not the
token.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from seals_al.errors import SealsError, cut, shown
from seals_al.labeltools.base import ENV_KEY as TOOL_KEY
from seals_al.labeltools.base import ENV_URL as TOOL_URL
from seals_al.labeltools.base import LabelToolError, LabelToolUnreachable
from seals_al.settings import is_count

ENV_URL = "LABEL_STUDIO_URL"
ENV_KEY = "LABEL_STUDIO_API_KEY"
PAGE_SIZE = 500
EXPORT_CHUNK = 100  # tasks asked for in one export request
# What a pulled task keeps of its data: the item and the push's own fields, not the text (the
# items file has it), so the inbox file stays small however long the texts are.
PULLED_DATA = ("seals_id", "round", "rank", "score", "reached_from")
LISTED = ("id", "data", "meta", "total_annotations", "cancelled_annotations", "updated_at")
# The events a webhook is sent for: whatever changes whether a task is answered.
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
ATTEMPTS = 5
BACKOFF_SECONDS = 1.0  # 1, 2, 4, 8 s between the attempts
TIMEOUT_SECONDS = 60.0


class LabelStudioError(LabelToolError):
    """Label Studio refused a request (``status``: its HTTP status), or could not be reached."""


class LabelStudioUnreachable(LabelStudioError, LabelToolUnreachable):
    """No answer after every retry (down, restarting, or slow): a wait polls again later."""


@dataclass(frozen=True)
class Connection:
    url: str  # what requests go to (connection() refuses user:password@; never printed if given)
    token: str = field(repr=False)  # never shown

    @property
    def shown_url(self) -> str:
        """The URL as messages print it: any ``user:password@`` replaced by ``***@``."""
        return _hide_credentials(self.url)


_URL_CREDENTIALS = re.compile(r"(https?://)[^/@\s]+@")
_AUTHORIZATION = re.compile(r"\b(Token|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")  # echoed headers


def _hide_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every http(s) URL in it replaced by ``***@``."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def connection(campaign_url: str | None = None) -> Connection | None:
    """The configured Label Studio, or None when no URL is set (environment or campaign)."""
    url = (os.environ.get(ENV_URL) or os.environ.get(TOOL_URL) or campaign_url or "").strip().rstrip("/")
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise SealsError(
            f"Label Studio URL {shown(_hide_credentials(url))}: expected http://host[:port] or https://..."
        )
    try:
        host, _ = urlsplit(url).hostname, urlsplit(url).port  # a bad port is a ValueError
    except ValueError:
        host = None
    if not host:
        raise SealsError(
            f"Label Studio URL {shown(_hide_credentials(url))}: not a usable URL (expected "
            "http://host[:port] or https://...)"
        )
    if _URL_CREDENTIALS.match(url):
        raise SealsError(
            f"Label Studio URL {shown(_hide_credentials(url))}: holds a user and password, which would "
            f"replace the API token on every request; give the URL without them and the token in {ENV_KEY}"
        )
    token = (os.environ.get(ENV_KEY) or os.environ.get(TOOL_KEY) or "").strip()
    if not token:
        raise SealsError(f"Label Studio at {url}: set {ENV_KEY} to an API token of a user of it")
    return Connection(url, token)


class Client:
    """A few calls of Label Studio's REST API, each retried with backoff."""

    def __init__(
        self,
        conn: Connection,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = conn.shown_url  # for messages; requests go to conn.url
        self._base = conn.url
        self._token = conn.token
        self._access: str | None = None  # for a personal access token
        self.attempts, self.backoff, self.timeout, self._sleep = attempts, backoff, timeout, sleep
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment between us and the server

    @property
    def _personal(self) -> bool:
        """A personal access token is a JWT (three base64url parts); a legacy token is not."""
        return self._token.count(".") == 2 and self._token.startswith("eyJ")

    def _authorization(self, refresh: bool = False) -> str:
        if not self._personal:
            return f"Token {self._token}"
        if self._access is None or refresh:
            answer = self._send("POST", "/api/token/refresh", {"json": {"refresh": self._token}}, auth=None)
            self._access = answer.get("access") if isinstance(answer, dict) else None
            if not self._access:
                raise LabelStudioError(f"{self.url}: /api/token/refresh gave no access token")
        return f"Bearer {self._access}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call (``params`` / ``json`` as in requests); its JSON answer."""
        try:
            return self._send(method, path, kwargs, auth=self._authorization())
        except _Unauthorized:
            if not self._personal:
                raise self._refused() from None
        try:  # an access token expires after minutes: refresh it once
            return self._send(method, path, kwargs, auth=self._authorization(refresh=True))
        except _Unauthorized:
            raise self._refused() from None

    def _refused(self) -> LabelStudioError:
        return LabelStudioError(
            f"{self.url}: the API token in {ENV_KEY} was refused; copy a valid one from Label Studio's "
            "Account & Settings page (a legacy token needs the organization's legacy tokens enabled)"
        )

    def pause(self, attempt: int) -> None:
        """The backoff before retry number ``attempt`` (1, 2, 4, 8 s by default)."""
        self._sleep(self.backoff * 2 ** (attempt - 1))

    def _send(self, method: str, path: str, kwargs: dict, auth: str | None) -> Any:
        headers = {"Authorization": auth} if auth else {}
        # A request that changes something (an import) is sent once: an answer lost on the way back
        # must not import twice; the push re-reads the project and sends only what is missing.
        attempts = self.attempts if method == "GET" or auth is None else 1
        failure, started = "", time.monotonic()
        for attempt in range(attempts):
            if attempt:
                self.pause(attempt)
            deadline = time.monotonic() + self.timeout  # for the whole answer, not each read
            try:
                # Never redirected: a 3xx would send the token on to wherever it points.
                response = self.session.request(
                    method,
                    self._base + path,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                    **kwargs,
                )
                body = _whole_body(response, deadline)
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as e:
                failure = f"{type(e).__name__}"
                continue
            except _TooSlow:
                failure = f"no whole answer within {self.timeout:g} s"
                continue
            if response.status_code in (401, 403):
                if auth is None:  # the token exchange itself
                    raise LabelStudioError(f"{self.url}: the personal access token in {ENV_KEY} was refused")
                raise _Unauthorized()
            if response.status_code == 429 or response.status_code >= 500:
                failure = f"HTTP {response.status_code}"
                continue
            if 300 <= response.status_code < 400:
                where = self._redact(response.headers.get("Location", "(no Location)"))
                raise LabelStudioError(
                    f"{method} {self.url}{path}: HTTP {response.status_code}, a redirect to "
                    f"{cut(where, 200)}; it is not followed (the token would go with it): set "
                    f"{ENV_URL} to the address Label Studio answers at itself",
                    response.status_code,
                )
            if response.status_code >= 400:
                raise LabelStudioError(
                    f"{method} {self.url}{path}: HTTP {response.status_code}: {self._redact(_detail(body))}",
                    response.status_code,
                )
            if not body:
                return None
            try:
                return json.loads(body)
            except ValueError:
                raise LabelStudioError(
                    f"{method} {self.url}{path}: the answer is not JSON; is {ENV_URL} the URL of "
                    "Label Studio itself (not a login page or proxy in front of it)?"
                ) from None
        raise LabelStudioUnreachable(
            f"{self.url}: Label Studio did not answer {method} {path} after {attempts} attempt(s) "
            f"over {time.monotonic() - started:.0f} s ({failure}); is it running at {ENV_URL}?"
        )

    def _redact(self, text: str) -> str:
        """``text`` (an answer's body, a header) with the token, the access token and the URL's
        credentials replaced by ``***``: a server that echoes the request must not print them."""
        for secret in (self._token, self._access):
            if secret:
                text = text.replace(secret, "***")
        return _AUTHORIZATION.sub(r"\1 ***", _hide_credentials(text))

    # -- the calls used here ------------------------------------------------------------------
    def _shaped(self, method: str, path: str, answer: Any, expected: str, fits: bool) -> Any:
        """``answer`` when ``fits``; else an error naming the call and what came back."""
        if not fits:
            raise LabelStudioError(
                f"{method} {self.url}{path}: expected {expected} in the answer, got "
                f"{self._redact(shown(answer, 120))}; is {ENV_URL} a Label Studio of a known version?"
            )
        return answer

    def project(self, project_id: int) -> dict | None:
        path = f"/api/projects/{project_id}"
        try:
            answer = self.call("GET", path)
        except LabelStudioError as e:
            if e.status == 404:
                return None
            raise
        fits = _is_project(answer) and isinstance(answer.get("label_config"), str)
        return self._shaped("GET", path, answer, "a project with an id and a label_config", fits)

    def projects(self) -> list[dict]:
        projects, page = [], 1
        while True:
            answer = self.call("GET", "/api/projects", params={"page": page, "page_size": 100})
            results = answer.get("results") if isinstance(answer, dict) else None
            fits = isinstance(results, list) and all(_is_project(p) for p in results)
            projects += self._shaped("GET", "/api/projects", results, "a list of projects as results", fits)
            if not results or not answer.get("next"):  # an empty page ends it, whatever "next" says
                return projects
            page += 1

    def create_project(self, title: str, label_config: str, description: str) -> dict:
        answer = self.call(
            "POST",
            "/api/projects",
            json={"title": title, "label_config": label_config, "description": description},
        )
        return self._shaped("POST", "/api/projects", answer, "the new project's id", _is_project(answer))

    def webhooks(self, project_id: int) -> list[dict]:
        """The project's webhooks."""
        answer = self.call("GET", "/api/webhooks/", params={"project": project_id})
        fits = isinstance(answer, list) and all(
            _is_project(w) and isinstance(w.get("url"), str) for w in answer
        )
        return list(self._shaped("GET", "/api/webhooks/", answer, "a list of webhooks", fits))

    def put_webhook(self, project_id: int, url: str, headers: dict[str, str], webhook_id: int | None) -> int:
        """Create the project's webhook to ``url`` (or update webhook ``webhook_id``): annotation
        events, with their payload and ``headers``. Returns its id."""
        body = {
            "project": project_id,
            "url": url,
            "send_payload": True,
            "send_for_all_actions": False,
            "headers": headers,
            "is_active": True,
            "actions": list(WEBHOOK_ACTIONS),
        }
        method, path = (
            ("POST", "/api/webhooks/") if webhook_id is None else ("PATCH", f"/api/webhooks/{webhook_id}/")
        )
        answer = self.call(method, path, json=body)
        return self._shaped(method, path, answer, "the webhook's id", _is_project(answer))["id"]

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of the project, without annotations (their counts only) and without the
        texts: what is kept of each task is small, so a listing of a large project is too."""
        tasks: list[dict] = []
        page = 1
        while True:
            answer = self.call(
                "GET", "/api/tasks", params={"project": project_id, "page": page, "page_size": PAGE_SIZE}
            )
            fits = (
                isinstance(answer, dict)
                and isinstance(answer.get("tasks"), list)
                and all(_is_task(t) for t in answer["tasks"])
                and is_count(answer.get("total"))
            )
            self._shaped("GET", "/api/tasks", answer, "tasks (each with an id) and their total", fits)
            tasks += [_listed(t) for t in answer["tasks"]]
            if not answer["tasks"] or len(tasks) >= answer["total"]:
                return tasks
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        path = f"/api/projects/{project_id}/import"
        answer = self.call("POST", path, params={"return_task_ids": "true"}, json=tasks)
        ids = answer.get("task_ids", []) if isinstance(answer, dict) else None
        fits = isinstance(ids, list) and all(is_count(i) for i in ids)
        return list(self._shaped("POST", path, ids, "a list of task ids", fits))

    def export(self, project_id: int, task_ids: Sequence[int]) -> list[dict]:
        """These tasks of the project with their annotations (Label Studio's JSON export), asked
        for :data:`EXPORT_CHUNK` at a time, so no answer holds more than that many tasks however
        large the project grows; tasks not asked for are left out. No ids: no request (an export
        without ids would be the whole project)."""
        path = f"/api/projects/{project_id}/export"
        wanted, tasks = set(task_ids), []
        for start in range(0, len(task_ids), EXPORT_CHUNK):
            chunk = list(task_ids[start : start + EXPORT_CHUNK])
            params = {"exportType": "JSON", "download_all_tasks": "true", "ids[]": chunk}
            answer = self.call("GET", path, params=params)
            fits = isinstance(answer, list) and all(_is_task(t) for t in answer)
            tasks += [
                t
                for t in self._shaped("GET", path, answer, "a list of tasks, each with an id", fits)
                if t["id"] in wanted
            ]
        return tasks


class _Unauthorized(Exception):
    pass


def _is_project(answer: object) -> bool:
    return isinstance(answer, dict) and is_count(answer.get("id"))


def _is_task(task: object) -> bool:
    """A task as this module reads it: a mapping with an id; its data, meta and counts are looked
    at only when they have the expected types (a task with other ones is not this campaign's)."""
    return isinstance(task, dict) and is_count(task.get("id"))


def _listed(task: dict) -> dict:
    """What is kept of a listed task: its id, marks, counts, time and data without the text."""
    return pulled_task({k: task[k] for k in LISTED if k in task})


class _TooSlow(Exception):
    pass


def _whole_body(response: requests.Response, deadline: float) -> bytes:
    """The answer's body, read as it arrives; :class:`_TooSlow` once ``deadline`` passes (a server
    that sends a byte every few seconds never trips the per-read timeout)."""
    chunks = []
    with response:
        while True:
            if time.monotonic() > deadline:
                raise _TooSlow()
            chunk = response.raw.read1(1 << 16, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _detail(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return cut(" ".join(body.decode("utf-8", "replace").split()), 200)
    if isinstance(answer, dict):
        return cut(str(answer.get("validation_errors") or answer.get("detail") or answer), 300)
    return cut(str(answer), 300)


def pulled_task(task: dict) -> dict:
    """An exported task as a pull keeps it: everything but the data fields a push did not write
    for SEALS (the text above all)."""
    data = task.get("data")
    if isinstance(data, dict):
        task = {**task, "data": {k: data[k] for k in PULLED_DATA if k in data}}
    return task
