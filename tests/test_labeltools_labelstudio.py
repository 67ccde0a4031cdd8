"""Label Studio in the loop, against a real Label Studio server (tests/labelstudio_server.py): push,
annotate through its REST API as a person would, pull, round; every policy of
seals_al.labeltools.labelstudio;
and the looped and one-round pipelines running the whole loop in kfp.local with no file copied."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.looped import make_looped
from pipelines.one_round import seals_one_round
from seals_al.campaign import Campaign, CampaignConfig, LabelsTimeout, init
from seals_al.campaign.layout import LABEL_STUDIO_LOCK
from seals_al.campaign.layout import LABEL_STUDIO_RECORD as RECORD
from seals_al.campaign.lease import Lease
from seals_al.cli import main
from seals_al.errors import SealsError
from seals_al.labelformats.labelstudio import Interface, interface_of, label_config, task_of
from seals_al.labeltools.labelstudio.client import (
    ENV_KEY,
    ENV_URL,
    PULLED_DATA,
    Client,
    Connection,
    LabelStudioError,
    connection,
)
from seals_al.labeltools.labelstudio.tool import LabelStudio as Sync
from seals_al.labeltools.loop import wait_for_labels, watcher

from .labelstudio_server import Person, choice_result
from .test_campaign import BATCH, CONCEPT, truth_of, write_config


# -- without a server -------------------------------------------------------------------------------
@pytest.mark.parametrize("concept", ["report_fraud", 'a "quoted" <concept> & more'])
def test_the_label_config_asks_concept_or_not_and_reads_back(concept):
    assert interface_of(label_config(concept), concept, "p") == Interface("label", "text", "text")


@pytest.mark.hostile
@pytest.mark.parametrize(
    "config",
    [
        "<View><Text name='t' value='$text'/></View>",
        "<View><Text name='t' value='$text'/><Choices name='c' toName='t'>"
        "<Choice value='yes'/><Choice value='maybe'/></Choices></View>",
        "<View><Choices name='c' toName='t'><Choice value='x'/><Choice value='not x'/></Choices></View>",
        "<View",
    ],
)
def test_a_project_that_does_not_ask_the_concept_is_refused(config):
    with pytest.raises(SealsError, match="project 7"):
        interface_of(config, "x", "project 7")


def test_a_batch_row_becomes_a_task_with_the_models_guess():
    row = {
        "id": "a",
        "text": "t",
        "score": 0.9,
        "round": 3,
        "rank": 0,
        "reached_from": "s",
        "probability": 0.2,
    }
    task = task_of(row, "c", "gs://b/camp", Interface("lab", "txt", "body"))
    assert task["data"] == {
        "body": "t",
        "seals_id": "a",
        "round": 3,
        "rank": 0,
        "score": 0.9,
        "reached_from": "s",
    }
    (prediction,) = task["predictions"]
    assert prediction["result"][0]["value"] == {"choices": ["not c"]}
    assert prediction["score"] == pytest.approx(0.8)
    assert (prediction["result"][0]["from_name"], prediction["result"][0]["to_name"]) == ("lab", "txt")
    assert task["meta"] == {"concept": "c", "strategy": None, "seals_campaign": "gs://b/camp"}
    assert "seals_campaign" not in task_of(row, "c")["meta"], "the published file names no location"


def test_the_connection_comes_from_the_environment_first(monkeypatch):
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(ENV_KEY, raising=False)
    assert connection(None) is None
    with pytest.raises(SealsError, match=f"http://campaign:8080: set {ENV_KEY}"):
        connection("http://campaign:8080")
    monkeypatch.setenv(ENV_KEY, "secret-token")
    monkeypatch.setenv(ENV_URL, "http://env:8080/")
    conn = connection("http://campaign:8080")
    assert conn.url == "http://env:8080"
    assert "secret-token" not in repr(conn)
    monkeypatch.setenv(ENV_URL, "ftp://x")
    with pytest.raises(SealsError, match="expected http"):
        connection(None)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Fails the first ``failures`` requests with 503, or sleeps ``delay`` seconds, then answers."""

    failures = 0
    delay = 0.0
    seen = 0

    shaped: object = None  # the JSON answer of any /api/ call when set

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/api/") and type(self).shaped is not None:
            self._answer(type(self).shaped)
            return
        if self.path.startswith("/trickle"):  # one byte at a time: each read is quick, the answer is not
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            return
        if self.path.startswith("/moved"):  # a redirect to another host, which would get the token
            self.send_response(307)
            self.send_header("Location", "http://user:pw@127.0.0.1:9/api/projects/7")
            self.end_headers()
            return
        if self.path.startswith("/echo"):  # a 400 whose body echoes the request's headers
            body = json.dumps({"detail": f"bad request; headers were {dict(self.headers)}"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/login":  # a page in front of Label Studio, not its API
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>please log in</html>")
            return
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self.send_response(503)
            self.end_headers()
            return
        time.sleep(type(self).delay)
        body = json.dumps({"id": 7, "label_config": "x"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            self.wfile.write(body)

    def do_POST(self):
        if self.path.startswith("/api/") and type(self).shaped is not None:
            self._answer(type(self).shaped)
            return
        type(self).seen += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    _Flaky.failures, _Flaky.delay, _Flaky.seen, _Flaky.shaped = 0, 0.0, 0, None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)  # quick shutdown
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.hostile
def test_a_server_that_fails_for_a_while_is_retried_with_backoff(flaky):
    _Flaky.failures = 3
    waits: list[float] = []
    client = Client(Connection(flaky, "t"), backoff=0.5, sleep=waits.append)
    assert client.project(7)["id"] == 7
    assert waits == [0.5, 1.0, 2.0]


@pytest.mark.hostile
def test_a_server_that_stays_down_or_slow_fails_naming_the_url(flaky):
    closed = closed_url()
    waits: list[float] = []
    with pytest.raises(
        LabelStudioError, match=rf"{closed}: Label Studio did not answer GET /api/projects/7 after 5 attempt"
    ):
        Client(Connection(closed, "t"), sleep=waits.append).project(7)
    assert waits == [1.0, 2.0, 4.0, 8.0]
    _Flaky.delay = 1.0
    with pytest.raises(LabelStudioError, match=rf"{flaky}: .* after 3 attempt\(s\) .*ReadTimeout"):
        Client(Connection(flaky, "t"), attempts=3, timeout=0.2, sleep=lambda s: None).project(7)


@pytest.mark.hostile
def test_a_request_that_changes_something_is_sent_once(flaky):
    """An import whose answer is lost may have happened: the push looks before sending again."""
    waits: list[float] = []
    with pytest.raises(LabelStudioError, match=r"did not answer POST /api/projects/7/import after 1 attempt"):
        Client(Connection(flaky, "t"), sleep=waits.append).import_tasks(7, [{"data": {}}])
    assert (_Flaky.seen, waits) == (1, [])


@pytest.mark.hostile
def test_an_answer_that_is_not_json_names_the_url(flaky):
    with pytest.raises(LabelStudioError, match=rf"GET {flaky}/login: the answer is not JSON; is {ENV_URL}"):
        Client(Connection(flaky, "t")).call("GET", "/login")


@pytest.mark.hostile
def test_no_redirect_is_followed_and_no_token_or_url_credentials_are_printed(flaky, monkeypatch):
    """A 307 re-sent the token to the host it pointed at, and a 400 echoing the request's headers
    printed the token."""
    token = "secret-token-123"
    client = Client(Connection(flaky, token), attempts=1)
    with pytest.raises(
        LabelStudioError, match=re.escape("HTTP 307, a redirect to http://***@127.0.0.1:9")
    ) as e:
        client.call("GET", "/moved")
    assert _Flaky.seen == 0, "nothing was sent anywhere else"
    with pytest.raises(LabelStudioError, match="HTTP 400: bad request; headers were") as echo:
        client.call("GET", "/echo")
    assert "Token ***" in str(echo.value)
    for error in (e.value, echo.value):
        for secret in (token, "pw@"):
            assert secret not in str(error)
    # A user and password in the URL would replace the token on every request: refused, not shown.
    monkeypatch.setenv(ENV_URL, flaky.replace("http://", "http://admin:hunter2@"))
    monkeypatch.setenv(ENV_KEY, token)
    with pytest.raises(SealsError, match=re.escape("http://***@127.0.0.1")) as refused:
        connection(None)
    assert "hunter2" not in str(refused.value)
    assert "admin" not in str(refused.value)


TASKS = "tasks (each with an id) and their total"
SHAPES = {  # what a call gets back, and what the error says it expected
    "project []": ("project", [], "a project with an id and a label_config"),
    "project {}": ("project", {}, "a project with an id and a label_config"),
    "project null": ("project", None, "a project with an id and a label_config"),
    "project id text": ("project", {"id": "7", "label_config": "x"}, "a project with an id"),
    "projects {}": ("projects", {}, "a list of projects as results"),
    "projects null results": ("projects", {"results": None}, "a list of projects as results"),
    "tasks []": ("tasks", [], TASKS),
    "tasks no total": ("tasks", {"tasks": [{"id": 1}]}, TASKS),
    "tasks null": ("tasks", {"tasks": None, "total": 0}, TASKS),
    "tasks mixed ids": ("tasks", {"tasks": [{"id": 1}, {"id": "2"}], "total": 2}, TASKS),
    "tasks not objects": ("tasks", {"tasks": [1, 2], "total": 2}, TASKS),
    "import {}": ("import", {"task_ids": {}}, "a list of task ids"),
    "import []": ("import", [], "a list of task ids"),
    "export {}": ("export", {}, "a list of tasks, each with an id"),
    "export null": ("export", None, "a list of tasks, each with an id"),
    "created []": ("create", [], "the new project's id"),
}


@pytest.mark.hostile
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_an_answer_of_valid_json_but_the_wrong_shape_is_an_error_naming_the_call(flaky, case):
    """Label Studio answers of the wrong shape ([], {} or null where a mapping or list is
    expected, a missing total, mixed id types) were tracebacks; each is one error naming the call."""
    call, answer, expected = SHAPES[case]
    _Flaky.shaped = json.dumps(answer).encode()
    client = Client(Connection(flaky, "t"), attempts=1)
    calls = {
        "project": lambda: client.project(7),
        "projects": client.projects,
        "tasks": lambda: client.tasks(7),
        "import": lambda: client.import_tasks(7, [{"data": {}}]),
        "export": lambda: client.export(7, [1]),
        "create": lambda: client.create_project("t", "<View/>", "d"),
    }
    with pytest.raises(LabelStudioError, match=re.escape(f"expected {expected}")) as e:
        calls[call]()
    assert flaky in str(e.value)


ANSWER_KEYS = st.sampled_from(["id", "tasks", "total", "results", "task_ids", "label_config", "data", "meta"])
ANSWERS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANSWER_KEYS, inner, max_size=4),
    max_leaves=12,
)


@given(answer=ANSWERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.hostile
def test_any_json_answer_is_read_or_refused_with_the_projects_error(flaky, answer):
    _Flaky.shaped = json.dumps(answer).encode()
    client = Client(Connection(flaky, "t"), attempts=1)
    for call in (
        lambda: client.project(7),
        client.projects,
        lambda: client.tasks(7),
        lambda: client.import_tasks(7, []),
        lambda: client.export(7, [1]),
    ):
        with contextlib.suppress(LabelStudioError):
            call()


@pytest.mark.hostile
def test_a_server_that_trickles_its_answer_is_timed_out_by_a_deadline_for_the_whole_answer(flaky):
    """Each read arrives well within the timeout, the whole answer never does: the call ends at its
    deadline and the message states the time really spent."""
    started = time.monotonic()
    client = Client(Connection(flaky, "t"), attempts=2, timeout=1.0, sleep=lambda s: None)
    with pytest.raises(
        LabelStudioError, match=r"after 2 attempt\(s\) over 2 s \(no whole answer within 1 s\)"
    ):
        client.call("GET", "/trickle")
    assert time.monotonic() - started < 5


@pytest.mark.hostile
def test_a_failed_label_studio_sync_does_not_block_the_label_files_in_the_inbox(
    flaky, tmp_path, clinc_slice, cache_dir, monkeypatch, capsys
):
    """Label Studio answering nonsense (or down) stopped the round, so labels dropped in the inbox
    by hand waited for it; the round says the sync failed and ingests them."""
    uri = str(tmp_path / "campaign")
    config = CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, label_tool_project=7))
    init(config, uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()  # round 0, before Label Studio is reachable
    truth = truth_of(clinc_slice)
    rows = "".join(f"{row['id']},{truth[row['id']]}\n" for row in campaign.state().batch)
    campaign.storage.write_text("inbox/000/labels.csv", "id,label\n" + rows)
    monkeypatch.setenv(ENV_URL, flaky)
    monkeypatch.setenv(ENV_KEY, "t")
    _Flaky.shaped = b"[]"  # not a project
    code = main(["round", uri])
    out, err = capsys.readouterr()
    assert "Label Studio push failed: GET " in out
    assert "the label files in the inbox are ingested all the same" in out
    assert campaign.state().round == 1, err
    # The new batch could not be pushed either: the round says so (exit 2), committed all the same.
    assert code == 2
    assert "round 1 is committed, but its batch was not pushed" in err


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


# -- against a real Label Studio ----------------------------------------------------------------------
def name_of(label: int) -> str:
    return CONCEPT if label else f"not {CONCEPT}"


def project_of(campaign: Campaign) -> int:
    return campaign.storage.read_json(RECORD)["project"]


@pytest.fixture
def campaign(tmp_path, clinc_slice, cache_dir, ls_env) -> Campaign:
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir)), uri)
    return Campaign(uri, progress=False)


def test_a_whole_round_trip_push_annotate_pull_round(campaign, clinc_slice, ls_env, capsys):
    person, truth, uri = Person(ls_env), truth_of(clinc_slice), campaign.storage.uri
    assert main(["round", uri]) == 0
    out = capsys.readouterr().out
    project = project_of(campaign)
    pushed = f"{BATCH} task(s) of the open batch, {BATCH} imported now"
    assert f"Label Studio project {ls_env.url}/projects/{project}/data: {pushed}" in out
    details = person.api("GET", f"/api/projects/{project}")
    assert details["title"] == f"{CONCEPT} (seals-al)"
    assert interface_of(details["label_config"], CONCEPT, "p") == Interface()
    tasks = person.tasks(project)
    batch = {row["id"]: row for row in campaign.state().batch}
    assert set(tasks) == set(batch)
    for item, task in tasks.items():
        assert {k: task["data"][k] for k in ("round", "rank", "score", "reached_from")} == {
            k: batch[item][k] for k in ("round", "rank", "score", "reached_from")
        }
        assert task["total_predictions"] == 1, "the model's guess is a pre-annotation"
    assert main(["label-tool", "push", uri]) == 0
    assert f"{BATCH} task(s) of the open batch, 0 imported now" in capsys.readouterr().out
    assert len(person.tasks(project)) == BATCH, "pushing again imports nothing twice"

    for item, task in tasks.items():
        person.annotate(task["id"], name_of(truth[item]))
    assert main(["label-tool", "pull", uri]) == 0
    out = capsys.readouterr().out
    assert (
        f"{BATCH} task(s) of the open batch labeled, 0 pending; written to inbox/000/label-studio.json" in out
    )
    export = campaign.storage.read_bytes("inbox/000/label-studio.json")
    assert main(["label-tool", "pull", uri]) == 0
    assert "nothing new to write" in capsys.readouterr().out
    assert campaign.storage.read_bytes("inbox/000/label-studio.json") == export

    assert main(["round", uri]) == 0
    out = capsys.readouterr().out
    assert "round 1 committed" in out
    state = campaign.state()
    assert len(state.labeled) == 100 + BATCH
    assert {state.labeled[i]["source"] for i in tasks} == {"inbox/000/label-studio.json"}
    assert all(state.labeled[i]["label"] == truth[i] for i in tasks)
    # Provenance: the tool, its task and annotation, the server's user and time, one voter.
    given = state.labeled[next(iter(tasks))]
    assert (given["tool"], given["agreement"], len(given["annotations"])) == ("label-studio", 1.0, 1)
    assert given["task"] == tasks[next(iter(tasks))]["id"]
    assert given["by"]
    assert given["labeled_at"]
    assert len(person.tasks(project)) == 2 * BATCH, "the round pushed its new batch"
    assert f"{BATCH} task(s) of the open batch, {BATCH} imported now" in out
    # The token is never written: not in the campaign, not in what the commands printed.
    for key in campaign.storage.list():
        assert ls_env.token.encode() not in campaign.storage.read_bytes(key), key
    assert ls_env.token not in out


def test_skips_ties_majorities_deletions_and_edits_follow_the_policies(campaign, clinc_slice, ls_env, capsys):
    person, truth, uri = Person(ls_env), truth_of(clinc_slice), campaign.storage.uri
    assert main(["round", uri]) == 0
    project = project_of(campaign)
    tasks = person.tasks(project)
    skipped, tied, voted, deleted, edited, *rest = sorted(tasks)
    person.annotate(tasks[skipped]["id"], None, cancelled=True)
    person.annotate(tasks[tied]["id"], CONCEPT)
    person.annotate(tasks[tied]["id"], f"not {CONCEPT}")
    for label in (1, 1, 0):
        person.annotate(tasks[voted]["id"], name_of(label))
    person.api("DELETE", f"/api/tasks/{tasks[deleted]['id']}")
    edited_annotation = person.annotate(tasks[edited]["id"], name_of(truth[edited]))
    for item in rest:
        person.annotate(tasks[item]["id"], name_of(truth[item]))
    capsys.readouterr()

    assert main(["label-tool", "pull", uri]) == 0
    out = capsys.readouterr().out
    assert f"{BATCH - 3} task(s) of the open batch labeled, 2 pending" in out
    assert f"1 task(s) deleted in Label Studio (items {deleted!r}) stay unlabeled" in out
    assert main(["round", uri]) == 0
    state = campaign.state()
    assert state.labeled[voted]["label"] == 1, "the majority counts"
    carried = {row["id"] for row in state.batch if row.get("carried_over")}
    assert carried == {skipped, tied, deleted}, "skipped, tied and deleted tasks stay out, carried over"
    after = person.tasks(project)
    assert deleted not in after, "a deleted task is not created again"
    assert len(after) == (BATCH - 1) + (BATCH - 3), "carried items keep their tasks; new items get one"
    progress = Sync.of(campaign).progress()
    assert (progress.deleted, progress.skipped_before) == ([deleted], 1)
    assert (progress.answered, progress.items) == (1, BATCH - 2), (
        "the tie is annotated; the skip not waited on"
    )

    # An annotation edited after it was ingested comes back as a relabel.
    flipped = name_of(1 - truth[edited])
    person.api("PATCH", f"/api/annotations/{edited_annotation}", json={"result": [choice_result(flipped)]})
    assert main(["label-tool", "pull", uri]) == 0
    assert "1 label(s) changed" in capsys.readouterr().out
    assert main(["round", uri]) == 0
    relabels = [
        json.loads(line) for line in campaign.storage.read_text("rounds/002/relabels.jsonl").splitlines()
    ]
    recorded = ("id", "old", "new", "round", "source", "tool")
    assert [{k: row[k] for k in recorded} for row in relabels] == [
        {
            "id": edited,
            "old": truth[edited],
            "new": 1 - truth[edited],
            "round": 2,
            "source": "inbox/001/label-studio.json",
            "tool": "label-studio",
        }
    ]


def test_a_pull_asks_for_and_writes_only_what_the_round_needs(
    campaign, clinc_slice, ls_env, capsys, monkeypatch
):
    """The pull file held every labeled task, so it grew with the campaign until it passed the
    label-file limit (then every round failed), and the export of the whole project was read into
    memory at once. A pull now exports the open batch's annotated tasks and earlier tasks updated
    since the last ingested pull, a few ids a request, and keeps no text."""
    from seals_al.labeltools.labelstudio import client, tool

    monkeypatch.setattr(tool, "RELISTED_SECONDS", 0.0)  # no margin: the test runs in seconds
    monkeypatch.setattr(client, "EXPORT_CHUNK", 7)
    exports: list[list[int]] = []
    call = Client.call

    def counted(self, method, path, **kwargs):
        if path.endswith("/export"):
            exports.append(kwargs["params"]["ids[]"])
        return call(self, method, path, **kwargs)

    monkeypatch.setattr(Client, "call", counted)
    person, truth, uri = Person(ls_env), truth_of(clinc_slice), campaign.storage.uri
    assert main(["round", uri]) == 0
    project = project_of(campaign)
    first = person.tasks(project)
    annotations = {item: person.annotate(t["id"], name_of(truth[item])) for item, t in first.items()}
    assert main(["label-tool", "pull", uri]) == 0
    assert sorted(i for ids in exports for i in ids) == sorted(t["id"] for t in first.values())
    assert max(map(len, exports)) == 7, "a few ids a request"
    assert len(exports) == -(-BATCH // 7)
    assert main(["round", uri]) == 0
    second = {i: t for i, t in person.tasks(project).items() if i not in first}
    half = sorted(second)[: len(second) // 2]
    for item in half:
        person.annotate(second[item]["id"], name_of(truth[item]))
    edited = sorted(first)[0]
    flipped = name_of(1 - truth[edited])
    person.api("PATCH", f"/api/annotations/{annotations[edited]}", json={"result": [choice_result(flipped)]})
    exports.clear()
    capsys.readouterr()

    assert main(["label-tool", "pull", uri]) == 0
    out = capsys.readouterr().out
    assert f"{len(half)} task(s) of the open batch labeled, {len(second) - len(half)} pending" in out
    assert "1 label(s) changed" in out
    pulled = json.loads(campaign.storage.read_bytes("inbox/001/label-studio.json"))
    # Not every labeled task again: the batch's, the relabeled one and, as times are compared
    # inclusively, the one updated last when the earlier pull listed the project.
    last = list(first)[-1]
    items = {t["data"]["seals_id"] for t in pulled}
    assert {*half, edited} <= items <= {*half, edited, last}
    assert len([i for ids in exports for i in ids]) == len(items)
    assert all(set(t["data"]) <= set(PULLED_DATA) for t in pulled), "no text is kept"
    assert main(["round", uri]) == 0
    assert campaign.state().labeled[edited]["label"] == 1 - truth[edited]
    assert all(item in campaign.state().labeled for item in half)


def test_label_studio_is_never_waited_on_under_the_campaigns_lease(campaign, ls_env):
    """A push held the campaign's lease across Label Studio calls, so a slow Label Studio blocked
    every round. Push and pull now hold a lease of their own (two pushes at once would import a
    batch twice) and never the campaign's."""
    campaign.round()
    with Lease(campaign.storage):  # a stage is running
        assert Sync.of(campaign).push().batch_tasks == BATCH
        assert Sync.of(campaign).pull().pending == BATCH
    with Lease(campaign.storage, key=LABEL_STUDIO_LOCK):  # another push or pull is running
        for step in (Sync.of(campaign).push, Sync.of(campaign).pull):
            with pytest.raises(SealsError, match="another Label Studio push or pull is running"):
                step()
    assert not campaign.storage.exists(LABEL_STUDIO_LOCK), "released once done"


def test_a_push_interrupted_after_creating_or_importing_is_finished_without_doubles(campaign, ls_env):
    """The project or the tasks got in but their ids were never recorded (a lost answer, a crash):
    the next push finds them by the campaign they name and imports nothing twice."""
    campaign.round()
    sync = Sync.of(campaign)
    concept = campaign.config.concept
    description = f"SEALS active learning for {concept!r}; campaign {campaign.storage.uri}"
    project = sync.client.create_project("made, never recorded", label_config(concept), description)
    batch = campaign.state().batch
    half = [task_of(row, concept, campaign.storage.uri) for row in batch[:3]]
    half += [task_of(row, concept) for row in batch[3 : BATCH // 2]]  # imported by hand from the file
    other = dict(task_of(batch[-1], concept, "gs://b/another-campaign"))  # not this campaign's
    sync.client.import_tasks(project["id"], [*half, other])
    pushed = sync.push()
    assert (pushed.project, pushed.imported, pushed.batch_tasks, pushed.deleted) == (
        project["id"],
        BATCH // 2,
        BATCH,
        [],
    )
    tasks = Person(ls_env).api("GET", "/api/tasks", params={"project": project["id"], "page_size": 100})[
        "tasks"
    ]
    assert len(tasks) == BATCH + 1, "no task twice (and the other campaign's task is left alone)"
    recorded = campaign.storage.read_json(RECORD)["tasks"]
    ours = {
        t["data"]["seals_id"]: t["id"]
        for t in tasks
        if t["meta"].get("seals_campaign") != "gs://b/another-campaign"
    }
    assert {i: r["task"] for i, r in recorded.items()} == ours


@pytest.mark.hostile
def test_a_choice_outside_the_config_is_rejected_naming_the_task(campaign, ls_env, capsys):
    person, uri = Person(ls_env), campaign.storage.uri
    assert main(["round", uri]) == 0
    project = project_of(campaign)
    config = label_config(CONCEPT).replace("</Choices>", '<Choice value="maybe"/></Choices>')
    person.api("PATCH", f"/api/projects/{project}", json={"label_config": config})
    task = next(iter(person.tasks(project).values()))
    person.annotate(task["id"], "maybe")
    before = {k: campaign.storage.read_bytes(k) for k in campaign.storage.list() if k != "LOCK"}
    capsys.readouterr()
    assert main(["label-tool", "pull", uri]) == 2
    err = capsys.readouterr().err
    assert f"{ls_env.url}/projects/{project}/data" in err
    assert f"task {task['id']} (seals_id {task['data']['seals_id']!r})" in err
    assert "the choice 'maybe'" in err
    after = {k: campaign.storage.read_bytes(k) for k in campaign.storage.list() if k != "LOCK"}
    assert after == before, "nothing written"


@pytest.mark.hostile
def test_a_wrong_token_is_a_clear_error_that_does_not_print_it(campaign, ls_env, monkeypatch, capsys):
    monkeypatch.setenv(ENV_KEY, "not-the-token-0123")
    assert main(["round", campaign.storage.uri]) == 2
    err = capsys.readouterr().err
    assert f"{ls_env.url}: the API token in {ENV_KEY} was refused" in err
    assert "not-the-token-0123" not in err
    assert campaign.committed_rounds() == [0], "the round committed; only the push failed"
    assert "round 0 is committed, but its batch was not pushed" in err
    monkeypatch.setenv(ENV_KEY, ls_env.token)  # fixed: the next round, with nothing new, pushes
    assert main(["round", campaign.storage.uri]) == 0
    assert f"{BATCH} task(s) of the open batch, {BATCH} imported now" in capsys.readouterr().out


def test_a_campaign_begun_without_label_studio_is_caught_up_by_its_next_ingest(
    campaign, ls_env, monkeypatch, capsys
):
    monkeypatch.delenv(ENV_URL)
    campaign.round()  # round 0, with no Label Studio configured
    monkeypatch.setenv(ENV_URL, ls_env.url)
    assert main(["ingest", campaign.storage.uri]) == 0
    out = capsys.readouterr().out
    assert f"{BATCH} task(s) of the open batch, {BATCH} imported now" in out
    assert "no new labels: nothing to do" in out
    assert len(Person(ls_env).tasks(project_of(campaign))) == BATCH


def test_a_pull_when_every_task_was_deleted_writes_nothing(campaign, ls_env):
    campaign.round()
    sync = Sync.of(campaign)
    pushed = sync.push()
    person = Person(ls_env)
    for task in person.tasks(pushed.project).values():
        person.api("DELETE", f"/api/tasks/{task['id']}")
    pulled = sync.pull()
    assert (pulled.labeled, pulled.pending, pulled.written, len(pulled.deleted)) == (0, 0, None, BATCH)
    assert not campaign.storage.list("inbox")


def test_a_pull_never_replaces_a_persons_own_file_and_replaces_its_own(campaign, ls_env):
    campaign.round()
    sync, person, key = Sync.of(campaign), Person(ls_env), "inbox/000/label-studio.json"
    tasks = list(person.tasks(sync.push().project).values())
    person.annotate(tasks[0]["id"], CONCEPT)
    own = b'{"note": "labels I gave by hand"}\n'
    campaign.storage.write_bytes(key, own)
    with pytest.raises(SealsError, match="was not written by a pull"):
        sync.pull()
    assert campaign.storage.read_bytes(key) == own, "a person's file is never replaced"
    campaign.storage.write_bytes("inbox/000/mine.json", own)  # its owner renames it
    campaign.storage.delete(key)
    assert sync.pull().written == key
    first = campaign.storage.read_bytes(key)
    person.annotate(tasks[1]["id"], CONCEPT)
    assert sync.pull().written == key, "a pull's own earlier file is replaced"
    assert campaign.storage.read_bytes(key) != first
    assert campaign.storage.read_bytes("inbox/000/mine.json") == own


def test_a_personal_access_token_works_too(campaign, ls_env, monkeypatch):
    person = Person(ls_env)
    response = person.session.post(f"{ls_env.url}/api/token/", timeout=30)
    if response.status_code == 409:  # one personal token per user: revoke the earlier one
        person.api("DELETE", "/api/token/")
        response = person.session.post(f"{ls_env.url}/api/token/", timeout=30)
    response.raise_for_status()
    monkeypatch.setenv(ENV_KEY, response.json()["token"])
    campaign.round()
    pushed = Sync.of(campaign).push()
    assert (pushed.imported, pushed.batch_tasks) == (BATCH, BATCH)


def test_the_wait_ends_when_enough_tasks_are_annotated_then_pulls(campaign, clinc_slice, ls_env):
    person, truth = Person(ls_env), truth_of(clinc_slice)
    campaign.round()  # no push: the wait pushes what is not there yet
    with pytest.raises(
        LabelsTimeout, match=r"\(0/10 item\(s\) answered in Label Studio\); the campaign is unchanged"
    ):
        wait_for_labels(campaign, 0.2, 0.5)
    project = project_of(campaign)
    tasks = sorted(person.tasks(project).items())

    def annotate_half() -> None:
        time.sleep(1.0)
        for item, task in tasks[: BATCH // 2]:
            person.annotate(task["id"], name_of(truth[item]))

    thread = threading.Thread(target=annotate_half)
    thread.start()
    assert wait_for_labels(campaign, 0.2, 60, fraction=0.5) == ["inbox/000/label-studio.json"]
    thread.join()
    assert campaign.round()["round"] == 1
    assert sum(1 for row in campaign.state().batch if row.get("carried_over")) == BATCH // 2


@pytest.mark.hostile
def test_a_wait_outlives_a_label_studio_that_does_not_answer(campaign, ls_env):
    campaign.round()
    down = Connection(closed_url(), ls_env.token)
    sync = Sync(campaign, down, Client(down, attempts=1))
    with pytest.raises(
        LabelsTimeout, match=rf"{down.url}: Label Studio did not answer .* asking again at the next poll"
    ):
        campaign.wait_for_labels(0.1, 0.5, watch=watcher(sync, 1.0))
    assert sync.record()["project"] is None, "nothing pushed, nothing recorded"
    pushed = Sync.of(campaign).push()  # back up: the batch goes in
    assert sync.record()["project"] == pushed.project


def test_the_looped_and_one_round_pipelines_run_the_loop_with_no_file_copied(
    tmp_path, built, kfp_local, ls_env, clinc_slice
):
    """kfp.local runs each task as a subprocess of this one, with its environment (on a cluster the
    Secret gives it): round 0 is pushed by the pipeline, a person annotates in Label Studio while
    wait_for_labels polls, the pipeline pulls and goes on; then the one-round pipeline takes in
    the next batch's annotations."""
    campaign_uri = str(tmp_path / "campaign")
    person, truth = Person(ls_env), truth_of(clinc_slice)

    def annotate_when_pushed(r: int, deadline: float) -> None:
        record = Path(campaign_uri) / RECORD
        while time.monotonic() < deadline:
            if record.exists():
                project = json.loads(record.read_text())["project"]
                todo = {i: t for i, t in person.tasks(project).items() if t["data"]["round"] == r}
                if todo:
                    time.sleep(1)  # the sensor polls meanwhile
                    for item, task in todo.items():
                        person.annotate(task["id"], name_of(truth[item]))
                    return
            time.sleep(0.5)

    thread = threading.Thread(target=annotate_when_pushed, args=(0, time.monotonic() + 300), daemon=True)
    thread.start()
    make_looped(2)(
        items_uri=built["items_uri"],
        campaign_uri=campaign_uri,
        embeddings_uri=built["embeddings_uri"],
        index_uri=built["index_uri"],
        concept=CONCEPT,
        seed_labels_uri="",
        truth_column="label",
        split_column="split",
        batch_size=20,
        poll_seconds=0.5,
        timeout_seconds=240.0,
    )
    thread.join(timeout=10)
    campaign = Campaign(campaign_uri, progress=False)
    assert campaign.committed_rounds() == [0, 1]
    assert len(campaign.state().labeled) == 120
    project = project_of(campaign)
    assert len(person.tasks(project)) == 40, "round 1's batch was pushed by the pipeline too"
    annotate_when_pushed(1, time.monotonic() + 60)
    seals_one_round(campaign_uri=campaign_uri)
    assert campaign.committed_rounds() == [0, 1, 2], "the one-round pipeline pulled, ingested and pushed"
    assert len(campaign.state().labeled) == 140
    assert len(person.tasks(project)) == 60
    for path in kfp_local.rglob("*"):
        if path.is_file():
            assert ls_env.token.encode() not in path.read_bytes(), path


def test_a_moved_campaign_still_finds_its_tasks_by_the_ids_it_recorded(campaign, ls_env, tmp_path):
    """Tasks were matched by the campaign's absolute path: after a move, every task looked deleted,
    nothing was pulled and a wait timed out. The recorded task ids find them; the pull says the
    campaign moved."""
    import shutil

    campaign.round()
    sync, person = Sync.of(campaign), Person(ls_env)
    project = sync.push().project
    tasks = list(person.tasks(project).values())
    for task in tasks[:3]:
        person.annotate(task["id"], CONCEPT)
    old = campaign.storage.uri
    moved = tmp_path / "moved"
    shutil.move(old, moved)
    campaign = Campaign(str(moved), progress=False)
    sync = Sync.of(campaign)
    progress = sync.progress()
    assert (progress.answered, progress.items, progress.deleted) == (3, BATCH, [])
    pulled = sync.pull()
    assert (pulled.labeled, pulled.pending, pulled.deleted) == (3, BATCH - 3, [])
    assert pulled.written == "inbox/000/label-studio.json"
    assert f"the campaign was at {old}" in pulled.summary()
    pushed = sync.push()
    assert (pushed.imported, pushed.batch_tasks) == (0, BATCH), "nothing pushed twice"
    assert len(person.tasks(project)) == BATCH
