"""Label Studio in the loop: push each batch as tasks, watch the annotations, pull them back.

Configuration: ``LABEL_STUDIO_URL`` (or the campaign's ``label_studio_url``; the environment
wins) and ``LABEL_STUDIO_API_KEY``, the names Label Studio's own SDK reads. The key is a legacy
token (``Authorization: Token ...``) or a personal access token (a JWT refresh token, exchanged
at ``/api/token/refresh`` for short-lived access tokens). It is read from the environment only,
and never written anywhere or printed.

What the campaign records, in ``labelstudio.json`` at its root: the project id, and for every
item pushed, its task id and the round that pushed it. One task per item: an example carried
over into a later batch keeps its task (and whatever annotations it already has).

Policies (the labels themselves are parsed by :mod:`seals_al.labels`):

- Each non-cancelled annotation is a vote; the majority is the label, a tie or a task with only
  cancelled annotations (skipped) is unlabeled and carried over.
- An annotation edited after it was ingested comes back at the next pull as a relabel (recorded
  in the round's ``relabels.jsonl``).
- A task deleted in Label Studio is reported by push and pull, never fatal, never re-created; its
  item stays unlabeled (carried over) until labeled some other way.
- A choice outside the config rejects the pull, naming the task; nothing is written.
- Label Studio down or slow: each read is retried with exponential backoff, then fails with an
  error naming the URL (a wait reports it and asks again at its next poll). A write (an import, a
  new project) is sent once; the push reads the project again before sending what is missing, so
  a lost answer never doubles a task. A refused token: an error naming the URL and the variable,
  not the token.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3

from seals_al.campaign.layout import (
    LABEL_STUDIO_EXPORT,
    LABEL_STUDIO_LOCK,
    LABEL_STUDIO_RECORD,
    label_studio_export,
)
from seals_al.campaign.lease import Lease
from seals_al.errors import SealsError, cut, shown
from seals_al.labels import (
    Interface,
    LabelFileError,
    check_label_file,
    interface_of,
    label_config,
    read_label_file,
    task_of,
)
from seals_al.settings import is_count

if TYPE_CHECKING:
    from seals_al.campaign import Campaign, State

ENV_URL = "LABEL_STUDIO_URL"
ENV_KEY = "LABEL_STUDIO_API_KEY"
PAGE_SIZE = 500
EXPORT_CHUNK = 100  # tasks asked for in one export request
# A pull looks again at earlier tasks updated this long before the listing its last ingested file
# came from (an annotation saved while that listing was read may carry an earlier time).
RELISTED_SECONDS = 300.0
# What a pulled task keeps of its data: the item and the push's own fields, not the text (the
# items file has it), so the inbox file stays small however long the texts are.
PULLED_DATA = ("seals_id", "round", "rank", "score", "reached_from")
LISTED = ("id", "data", "meta", "total_annotations", "cancelled_annotations", "updated_at")
ATTEMPTS = 5
BACKOFF_SECONDS = 1.0  # 1, 2, 4, 8 s between the attempts
TIMEOUT_SECONDS = 60.0


class LabelStudioError(SealsError):
    """Label Studio refused a request (``status``: its HTTP status), or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LabelStudioUnreachable(LabelStudioError):
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
    url = (os.environ.get(ENV_URL) or campaign_url or "").strip().rstrip("/")
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
    token = os.environ.get(ENV_KEY, "").strip()
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


def _count_of(task: dict, key: str) -> int:
    """An annotation count of a task (0 when absent or not a count)."""
    value = task.get(key, 0)
    return value if is_count(value) else 0


def _annotated(task: dict) -> bool:
    """Whether a listed task has an annotation, cancelled (a skip) or not."""
    return _count_of(task, "total_annotations") > 0 or _count_of(task, "cancelled_annotations") > 0


def _timestamp(value: object) -> datetime | None:
    """An ISO 8601 time as Label Studio writes them ("2026-12-07T22:12:07.435888Z"), or None."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _updated_after(task: dict, since: datetime) -> bool:
    """Whether a listed task changed after ``since``; a task without a readable time is looked at."""
    at = _timestamp(task.get("updated_at"))
    return at is None or at >= since


def _listed_at(tasks: Iterable[dict]) -> str | None:
    """The latest update among listed tasks (Label Studio's clock, never this machine's)."""
    times = [(at, t["updated_at"]) for t in tasks if (at := _timestamp(t.get("updated_at"))) is not None]
    return max(times)[1] if times else None


def _listed(task: dict) -> dict:
    """What is kept of a listed task: its id, marks, counts, time and data without the text."""
    return _pulled_task({k: task[k] for k in LISTED if k in task})


def _pulled_task(task: dict) -> dict:
    """An exported task as a pull keeps it: everything but the data fields a push did not write
    for SEALS (the text above all)."""
    data = task.get("data")
    if isinstance(data, dict):
        task = {**task, "data": {k: data[k] for k in PULLED_DATA if k in data}}
    return task


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


# -- push, pull, progress ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Pushed:
    project: int
    project_url: str
    imported: int  # tasks created by this push
    batch_tasks: int  # tasks of the open batch in Label Studio
    deleted: list[str]  # items of the open batch whose task was deleted in Label Studio
    moved_from: str | None = None  # where the campaign was when its tasks were pushed, if not here

    def summary(self) -> str:
        return (
            f"Label Studio project {self.project_url}: {self.batch_tasks} task(s) of the open batch, "
            f"{self.imported} imported now" + _deleted(self.deleted) + _moved(self.moved_from)
        )


@dataclass(frozen=True)
class Pulled:
    labeled: int  # tasks of the open batch with a label (a majority)
    pending: int  # not annotated, skipped only, or tied
    deleted: list[str]
    written: str | None  # the inbox file written, None when nothing changed
    relabels: int  # labels that differ from what the campaign holds
    moved_from: str | None = None  # where the campaign was when its tasks were pushed, if not here

    def summary(self) -> str:
        where = f"written to {self.written}" if self.written else "nothing new to write"
        return (
            f"Label Studio: {self.labeled} task(s) of the open batch labeled, {self.pending} pending; {where}"
            + (f"; {self.relabels} label(s) changed" if self.relabels else "")
            + _deleted(self.deleted)
            + _moved(self.moved_from)
        )


@dataclass(frozen=True)
class Progress:
    annotated: int  # open-batch tasks with at least one annotation that was not cancelled
    tasks: int  # open-batch tasks waited on: they exist and were not skipped in an earlier batch
    deleted: list[str]
    skipped_before: int = 0  # carried-over tasks whose annotations are all cancelled: not waited on

    def reached(self, fraction: float) -> bool:
        return self.tasks > 0 and self.annotated >= max(1, math.ceil(fraction * self.tasks - 1e-9))


def _moved(moved_from: str | None) -> str:
    if moved_from is None:
        return ""
    return (
        f"; tasks were pushed when the campaign was at {moved_from}: they are matched by the task "
        "ids the campaign recorded"
    )


def _deleted(items: list[str]) -> str:
    if not items:
        return ""
    shown_items = ", ".join(map(repr, items[:5])) + (", ..." if len(items) > 5 else "")
    return f"; {len(items)} task(s) deleted in Label Studio (items {shown_items}) stay unlabeled"


class Sync:
    """A campaign's Label Studio project: what push, pull and the wait do."""

    def __init__(self, campaign: Campaign, conn: Connection, client: Client | None = None):
        self.campaign = campaign
        self.client = client or Client(conn)
        self.url = conn.shown_url
        self.moved_from: str | None = None  # set when recorded tasks name another location

    @classmethod
    def of(cls, campaign: Campaign) -> Sync | None:
        """The campaign's Label Studio, or None when none is configured."""
        conn = connection(campaign.config.label_studio_url)
        return None if conn is None else cls(campaign, conn)

    # -- the record -------------------------------------------------------------------------------
    def _save(self, record: dict) -> None:
        self.campaign.storage.write_json(LABEL_STUDIO_RECORD, record)

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    def _project(self, record: dict) -> tuple[int, Interface]:
        """The project (created on first use, and recorded before any task is imported)."""
        concept = self.campaign.config.concept
        project_id = record["project"] or self.campaign.config.label_studio_project
        if project_id:
            project = self.client.project(project_id)
            if project is None:
                raise SealsError(
                    f"{self.url}: project {project_id} (recorded in "
                    f"{self.campaign.storage.where(LABEL_STUDIO_RECORD)}, or label_studio_project) does "
                    "not exist; it was deleted, or the URL names another Label Studio"
                )
            ui = interface_of(project["label_config"], concept, f"{self.project_url(project_id)}")
        else:
            # One created before its id was recorded (a lost answer, a crash) is taken, not doubled.
            description = f"SEALS active learning for {concept!r}; campaign {self.campaign.storage.uri}"
            made = [p for p in self.client.projects() if p.get("description") == description]
            project = made[0] if made else None
            if project is None:
                project = self.client.create_project(
                    f"{concept} (seals-al)"[:50], label_config(concept), description
                )
            project_id, ui = project["id"], Interface()
        if record["project"] != project_id:
            record["project"] = project_id
            self._save(record)
        return project_id, ui

    def _ours(self, tasks: list[dict], record: dict) -> dict[str, dict]:
        """This campaign's tasks of the project, by item id: the tasks it recorded (by task id and
        item, wherever the campaign has moved since), those marked with its URI by a push that
        stopped before recording them, and unmarked ones (imported by hand from
        ``to_label.labelstudio.json``); never another campaign's. A recorded task marked with
        another URI means the campaign was moved or copied: :attr:`moved_from` says from where."""
        uri = self.campaign.storage.uri
        recorded = {entry["task"]: item for item, entry in record["tasks"].items()}
        ours = {}
        for t in tasks:
            data, meta = t.get("data"), t.get("meta")
            if not isinstance(data, dict) or not isinstance(data.get("seals_id"), str):
                continue
            mark = meta.get("seals_campaign", uri) if isinstance(meta, dict) else uri
            if recorded.get(t["id"]) == data["seals_id"]:
                if mark != uri:
                    self.moved_from = mark
            elif mark != uri:
                continue
            ours[data["seals_id"]] = t
        return ours

    def _open_state(self) -> State:
        state = self.campaign.state()
        if state.round < 0:
            raise SealsError(
                f"{self.campaign.storage.uri}: no batch yet; run `seals-al round` to publish the first one"
            )
        return state

    # -- push -----------------------------------------------------------------------------------
    @contextmanager
    def _syncing(self) -> Iterator[None]:
        """One push or pull of the campaign at a time (two pushes at once would import a batch
        twice), under a lease of its own: the campaign's lease is never held while Label Studio
        is waited on, so a slow or unreachable Label Studio never blocks a round."""
        with Lease(self.campaign.storage, key=LABEL_STUDIO_LOCK, busy="Label Studio push or pull is running"):
            yield

    def push(self) -> Pushed:
        """Import the open batch's items that have no task yet (every push after the first for a
        batch imports nothing), and record the task ids."""
        with self._syncing():
            state = self._open_state()
            record = self.campaign.label_studio_record()
            project_id, ui = self._project(record)
            known, imported, uri = record["tasks"], 0, self.campaign.storage.uri
            for attempt in range(self.client.attempts):
                existing = self._ours(self.client.tasks(project_id), record)
                for item, task in existing.items():  # tasks an interrupted push imported, unrecorded
                    known.setdefault(item, {"task": task["id"], "round": task["data"].get("round")})
                new = [row for row in state.batch if row["id"] not in known]
                if not new:
                    break
                try:
                    ids = self.client.import_tasks(
                        project_id, [task_of(row, self.campaign.config.concept, uri, ui) for row in new]
                    )
                except LabelStudioUnreachable:
                    if attempt + 1 == self.client.attempts:
                        raise
                    self.client.pause(attempt + 1)  # then look again at what got in
                    continue
                if len(ids) != len(new):
                    raise LabelStudioError(
                        f"{self.url}: imported {len(new)} tasks into project {project_id} but got "
                        f"{len(ids)} task ids back; push again (it adopts what was imported)"
                    )
                for row, task_id in zip(new, ids, strict=True):
                    known[row["id"]] = {"task": task_id, "round": row["round"]}
                    existing[row["id"]] = {"id": task_id}
                imported += len(new)
                break
            deleted = sorted(row["id"] for row in state.batch if row["id"] not in existing)
            self._save(record)
            return Pushed(
                project_id,
                self.project_url(project_id),
                imported,
                len(state.batch) - len(deleted),
                deleted,
                self.moved_from,
            )

    # -- progress and pull -------------------------------------------------------------------------
    def _batch_tasks(
        self, state: State, record: dict, tasks: dict[str, dict]
    ) -> tuple[list[dict], list[str]]:
        """The open batch's tasks that exist, and the items whose task was deleted."""
        found, deleted = [], []
        for row in state.batch:
            if row["id"] in tasks:
                found.append(tasks[row["id"]])
            elif row["id"] in record["tasks"]:
                deleted.append(row["id"])
        return found, sorted(deleted)

    def _pushed_record(self) -> dict:
        record = self.campaign.label_studio_record()
        if not record["project"]:
            raise SealsError(
                f"{self.campaign.storage.uri}: nothing pushed to Label Studio yet; run "
                "`seals-al labelstudio push` first"
            )
        return record

    def progress(self) -> Progress:
        """How many tasks of the open batch have a non-cancelled annotation (one cheap listing).

        A task carried over from an earlier batch whose annotations are all cancelled was looked
        at and skipped; it is not waited on again (else one skip would stall every later wait
        that waits for the whole batch). It stays in the batch and counts once annotated."""
        state, record = self._open_state(), self._pushed_record()
        tasks = self._ours(self.client.tasks(record["project"]), record)
        found, deleted = self._batch_tasks(state, record, tasks)
        carried = {row["id"] for row in state.batch if row.get("carried_over")}
        annotated = sum(1 for t in found if _count_of(t, "total_annotations") > 0)
        skipped = sum(
            1
            for t in found
            if t["data"]["seals_id"] in carried
            and _count_of(t, "total_annotations") == 0
            and _count_of(t, "cancelled_annotations") > 0
        )
        return Progress(annotated, len(found) - skipped, deleted, skipped)

    def pull(self) -> Pulled:
        """Export the tasks the open round needs with their annotations into its inbox, as a Label
        Studio export the ingest validates: the open batch's annotated tasks, and earlier tasks
        updated since the listing the last ingested pull came from (relabels). Nothing is written
        when nothing changed, or when an annotation is invalid (the error names the task).

        What it reads and writes does not grow with the campaign: one listing of the project (a
        page at a time), an export of just those tasks (:data:`EXPORT_CHUNK` a request), and a file
        without the texts. The campaign's lease is not taken: the file is written whole at once,
        and a file that lands in an inbox whose round has just committed is taken in by the next
        round, as any label file is."""
        with self._syncing():
            state, record = self._open_state(), self._pushed_record()
            listed = self._ours(self.client.tasks(record["project"]), record)
            found, deleted = self._batch_tasks(state, record, listed)
            since = self._relisted_since(record, state.round)
            asked = [
                t["id"]
                for item, t in sorted(listed.items())
                if (item in state.batch_ids and _annotated(t))
                or (item in state.labeled and (since is None or _updated_after(t, since)))
            ]
            exported = self._ours(self.client.export(record["project"], asked), record)
            kept = [_pulled_task(t) for _, t in sorted(exported.items())]
            if not kept:  # nothing annotated yet, or every task deleted: nothing to take in
                return Pulled(0, len(found), deleted, None, 0, self.moved_from)
            return self._take_in(state, record, kept, found, deleted, _listed_at(listed.values()))

    def _relisted_since(self, record: dict, round_: int) -> datetime | None:
        """Earlier tasks updated after this were not in an ingested pull (:data:`RELISTED_SECONDS`
        before the listing of the last file an earlier round's pull wrote); None: no such time is
        recorded (nothing pulled yet, or a record from before times were kept): every labeled task
        is looked at."""
        earlier = [int(r) for r in record.get("listed", {}) if int(r) < round_]
        if not earlier:
            return None
        at = _timestamp(record["listed"][str(max(earlier))])
        return None if at is None else at - timedelta(seconds=RELISTED_SECONDS)

    def _take_in(
        self,
        state: State,
        record: dict,
        kept: list[dict],
        found: list[dict],
        deleted: list[str],
        listed_at: str | None,
    ) -> Pulled:
        """Check the pulled tasks as the ingest will, then write them into the open round's inbox
        (unless nothing changed since the last pull wrote)."""
        campaign = self.campaign
        data = json.dumps(kept, indent=1, sort_keys=True).encode()
        key = label_studio_export(state.round)
        labeled = {i: row["label"] for i, row in state.labeled.items()}
        try:
            checked = check_label_file(
                LABEL_STUDIO_EXPORT,
                data,
                campaign.config.concept,
                open_batch=state.batch_ids,
                labeled=labeled,
                known=set(state.labeled) | state.batch_ids,
            )
        except LabelFileError as e:
            raise SealsError(f"{self.project_url(record['project'])}: {e.detail}") from e
        batch_ids = {t["data"]["seals_id"] for t in found}
        answers = {a.item_id: a.label for a in checked.answers}
        news = bool(checked.new or checked.relabels)
        written, st = None, campaign.storage
        there = st.read_bytes(key) if st.exists(key) else None
        if there is not None and not self._pulled_here(record, state.round, there):
            if news:  # someone's own file by that name: never replaced
                raise SealsError(
                    f"{st.where(key)}: was not written by a pull (a person's own file?) and is "
                    "left as it is; give it another name in the inbox, then pull again"
                )
        # Written when it brings something new, or to replace an earlier pull's answers that changed.
        elif (news or there is not None) and self._changed(there, answers):
            # Recorded before it is written: a pull that stops between the two still knows its file.
            pulled = record.setdefault("pulled", {}).setdefault(str(state.round), [])
            pulled.append(hashlib.sha256(data).hexdigest())
            if listed_at is not None:
                record.setdefault("listed", {})[str(state.round)] = listed_at
            self._save(record)
            st.write_bytes(key, data)
            written = key
        return Pulled(
            labeled=len(batch_ids & answers.keys()),
            pending=len(batch_ids - answers.keys()),
            deleted=deleted,
            written=written,
            relabels=len(checked.relabels),
            moved_from=self.moved_from,
        )

    def _pulled_here(self, record: dict, round_: int, data: bytes) -> bool:
        """Whether a pull wrote these bytes into round ``round_``'s inbox (the record keeps the
        sha256 of each file a pull wrote). A file written by a version that kept no such record
        counts as a pull's when it is an export of tasks this campaign pushed, and nothing else."""
        pulled = record.get("pulled")
        if pulled is not None:
            return hashlib.sha256(data).hexdigest() in pulled.get(str(round_), [])
        try:
            tasks = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return False
        uri = self.campaign.storage.uri
        return (
            isinstance(tasks, list)
            and bool(tasks)
            and all(isinstance(t, dict) and isinstance(t.get("meta"), dict) for t in tasks)
            and all(t["meta"].get("seals_campaign") == uri for t in tasks)
        )

    def _changed(self, there: bytes | None, answers: dict[str, int]) -> bool:
        """Whether ``answers`` differ from those of the earlier pull's file, ``there`` (None: no
        file yet); an export's bytes change with every pull, e.g. its "created_ago" fields; its
        answers do not."""
        if there is None:
            return True
        _, before, _, _ = read_label_file(LABEL_STUDIO_EXPORT, there, self.campaign.config.concept)
        return {a.item_id: a.label for a in before} != answers

    def watcher(self, fraction: float) -> Callable[[], str]:
        """For :meth:`Campaign.wait_for_labels`: each call pushes the open batch if that has not
        been done yet, looks at its tasks and, once ``fraction`` of them are annotated, pulls; it
        returns a line saying how far along. A Label Studio that does not answer (restarting,
        say) is reported and asked again at the next poll, until the wait's timeout."""
        pushed = False

        def look() -> str:
            nonlocal pushed
            try:
                if not pushed:
                    print(self.push().summary(), flush=True)
                    pushed = True
                progress = self.progress()
                line = f"{progress.annotated}/{progress.tasks} task(s) annotated in Label Studio"
                if progress.skipped_before:
                    line += f" ({progress.skipped_before} skipped in an earlier batch, not waited on)"
                if progress.reached(fraction):
                    pulled = self.pull()
                    line += f"; pulled: {pulled.labeled} labeled, {pulled.pending} pending"
                return line + _deleted(progress.deleted)
            except LabelStudioUnreachable as e:
                return f"{e}; asking again at the next poll"

        return look


def wait_for_labels(
    campaign: Campaign, poll_seconds: float, timeout_seconds: float, fraction: float = 1.0
) -> list[str]:
    """Wait for labels: with Label Studio configured, push the open batch (if it is not there
    yet), then poll until ``fraction`` of its tasks are annotated and pull; a label file dropped
    into the inbox ends the wait too. Returns the new label files' keys."""
    if not 0 < fraction <= 1:
        raise SealsError(f"the fraction of tasks to wait for must be in (0, 1], got {fraction:g}")
    sync = Sync.of(campaign)
    if sync is None:
        return campaign.wait_for_labels(poll_seconds, timeout_seconds)
    return campaign.wait_for_labels(poll_seconds, timeout_seconds, watch=sync.watcher(fraction))


def push_if_configured(campaign: Campaign) -> Pushed | None:
    """Push the open batch when Label Studio is configured and a batch is out."""
    sync = Sync.of(campaign)
    if sync is None or campaign.state().round < 0:
        return None
    return sync.push()


def sync_before_ingest(campaign: Campaign) -> list[str]:
    """What an ingest does first when Label Studio is configured: push the open batch's missing
    tasks (a campaign that had none, or a push that failed, is caught up by the next run) and pull
    the annotations into the inbox. Returns what each did, one line each."""
    sync = Sync.of(campaign)
    if sync is None or campaign.state().round < 0:
        return []
    lines = []
    for action, step in (("push", sync.push), ("pull", sync.pull)):
        try:
            lines.append(step().summary())
        except LabelStudioError as e:  # never blocks the label files already in the inbox
            lines.append(
                f"Label Studio {action} failed: {e}; the label files in the inbox are ingested all "
                f"the same (run `seals-al labelstudio {action}` again later)"
            )
            break
    return lines
