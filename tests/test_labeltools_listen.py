"""`seals-al listen` (seals_al.labeltools.listen, .events): a campaign continues on the labeling tool's
webhook with no process polling. Against a real Label Studio sending real webhooks; the service's
refusals; the claim that makes a round continue once; and the KFP and Argo calls, each checked
against its published API schema (kfp_server_api's models, Argo's JSON Schema) and sent to a local
HTTP server that records them (not a live KFP or Argo)."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import jsonschema
import kfp_server_api
import pytest
import requests

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.campaign.layout import continued_key
from seals_al.errors import SealsError
from seals_al.labeltools.events import STALE_SECONDS, ResumeArgo, RunHere, StartKfpRun, continue_if_answered
from seals_al.labeltools.labelstudio.tool import LabelStudio
from seals_al.labeltools.listen import SECRET_HEADER, Listener, campaign_id

from .labelstudio_server import Person
from .test_campaign import BATCH, CONCEPT, truth_of, write_config

SECRET = "a-shared-secret-of-some-length"
ARGO_SCHEMA = Path(__file__).parent / "schemas" / "argo-workflows-v4.1-schema.json"


# -- the service on its own ----------------------------------------------------------------------------
class Looks:
    """What the listener's workers were asked: the campaigns looked at, in order."""

    def __init__(self, delay: float = 0.0):
        self.seen: list[str] = []
        self.delay = delay

    def __call__(self, uri: str) -> str:
        time.sleep(self.delay)
        self.seen.append(uri)
        return "looked"


@pytest.fixture
def listener():
    looks = Looks(delay=0.3)
    service = Listener(["gs://b/one", "gs://b/two"], looks, SECRET, port=0, log=lambda line: None)
    service.looks = looks
    service.start(catch_up=False)  # only events make it look
    yield service
    service.stop()


def post(url: str, body: object = None, secret: str | None = SECRET, raw: bytes | None = None):
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    data = raw if raw is not None else json.dumps(body or {"action": "ANNOTATION_CREATED"}).encode()
    return requests.post(url, data=data, headers={**headers, "Content-Type": "application/json"}, timeout=10)


@pytest.mark.hostile
def test_a_webhook_without_the_secret_or_for_no_campaign_does_nothing(listener):
    hook = listener.hook_url("gs://b/one")
    assert post(hook, secret=None).status_code == 401
    assert post(hook, secret=SECRET[:-1] + "x").status_code == 401
    assert post(f"{listener.url}/hooks/{campaign_id('gs://b/other')}").status_code == 404
    assert post(f"{listener.url}/elsewhere").status_code == 404
    assert post(hook, raw=b"{not json").status_code == 400
    connection = http.client.HTTPConnection(*listener.server.server_address[:2], timeout=10)
    connection.putrequest("POST", f"/hooks/{campaign_id('gs://b/one')}")
    connection.putheader(SECRET_HEADER, SECRET)
    connection.putheader("Content-Length", str(2**30))  # announced, never sent
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
    time.sleep(0.5)
    assert listener.looks.seen == [], "nothing looked at"
    assert requests.get(f"{listener.url}/healthz", timeout=5).json() == {"campaigns": 2}


@pytest.mark.hostile
def test_a_client_that_stops_sending_is_dropped_and_changes_nothing():
    import socket

    looks = Looks()
    service = Listener(["gs://b/one"], looks, SECRET, port=0, log=lambda line: None, request_seconds=0.5)
    service.start(catch_up=False)
    try:
        with socket.create_connection(service.server.server_address[:2], timeout=10) as stalled:
            head = (
                f"POST /hooks/{campaign_id('gs://b/one')} HTTP/1.1\r\nHost: x\r\n"
                f"{SECRET_HEADER}: {SECRET}\r\nContent-Length: 100\r\n\r\n" + "{" * 10
            )
            stalled.sendall(head.encode())  # 10 of the 100 bytes announced, then nothing
            started = time.monotonic()
            assert stalled.recv(1024) == b"", "closed by the server"
            assert time.monotonic() - started < 5
        assert requests.get(f"{service.url}/healthz", timeout=5).status_code == 200, "still serving"
        assert looks.seen == []
    finally:
        service.stop()


def test_a_burst_of_events_is_answered_at_once_and_looked_at_a_few_times(listener):
    hook = listener.hook_url("gs://b/two")
    started = time.monotonic()
    answers = [post(hook, {"action": "ANNOTATION_UPDATED", "n": n}) for n in range(20)]
    assert all(a.status_code == 202 for a in answers)
    assert time.monotonic() - started < 5, "answered before the look is done (the tool waits 1 s)"
    deadline = time.monotonic() + 10
    while listener.campaigns[campaign_id("gs://b/two")].looks == 0:
        assert time.monotonic() < deadline, "no look within 10 s"
        time.sleep(0.05)
    time.sleep(1.0)  # any look still queued is done by now
    assert set(listener.looks.seen) == {"gs://b/two"}
    assert 1 <= len(listener.looks.seen) <= 3, (
        f"20 events coalesced, looked at {len(listener.looks.seen)} time(s)"
    )


# -- the claim: once per round -------------------------------------------------------------------------
@pytest.fixture
def oracle_campaign(tmp_path, clinc_slice, cache_dir, monkeypatch) -> Campaign:
    for name in ("LABEL_TOOL", "LABEL_TOOL_URL", "LABEL_STUDIO_URL"):
        monkeypatch.delenv(name, raising=False)
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, label_tool="oracle")), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    return campaign


class Refused:
    name = "refused"

    def __call__(self, campaign: Campaign, r: int) -> str:
        raise SealsError("the API said no")


def test_a_round_continues_once_and_a_failed_or_dead_claim_is_taken_again(oracle_campaign):
    campaign, key = oracle_campaign, continued_key(0)
    with pytest.raises(SealsError, match="the API said no"):
        continue_if_answered(campaign, Refused())
    assert not campaign.storage.exists(key), "a failed continuation releases its claim"
    # Another listener holds round 0's claim (it is continuing it now): this one does nothing.
    claim = {"round": 0, "by": "kfp", "at": datetime.now(UTC).isoformat(), "done": None}
    campaign.storage.write_json(key, claim)
    line = continue_if_answered(campaign, RunHere())
    assert "already continued (or continuing) by another event" in line
    assert campaign.state().round == 0
    # A claim that is not one (a hand edit, a truncated write) is taken over, never a crash.
    for broken in ('{"by": "x"}', "[1, 2]", '{"at": "yesterday"}', "not json"):
        campaign.storage.write_text(key, broken)
        with pytest.raises(SealsError, match="the API said no"):
            continue_if_answered(campaign, Refused())
        assert not campaign.storage.exists(key)
    # ... which died long ago: its claim is taken over, and the round runs here.
    old = (datetime.now(UTC) - timedelta(seconds=STALE_SECONDS + 60)).isoformat()
    campaign.storage.write_json(key, {**claim, "at": old})
    line = continue_if_answered(campaign, RunHere())
    assert "round 1 committed" in line
    assert campaign.storage.read_json(key)["done"].startswith("round 1 committed")
    assert campaign.state().round == 1


# -- KFP and Argo: the calls, against their published schemas ------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, dict, object]]] = []
    answers: ClassVar[dict[tuple[str, str], object]] = {}

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        type(self).requests.append((self.command, self.path, dict(self.headers), body))
        answer = json.dumps(type(self).answers.get((self.command, self.path.split("?")[0]), {})).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _handle


@pytest.fixture
def api():
    _Recorder.requests, _Recorder.answers = [], {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder
    server.shutdown()
    server.server_close()


def _fits_model(model: type, data: dict) -> None:
    """Every key of ``data`` is a field of the kfp_server_api model (recursively), and the model
    accepts the values (its client-side validation is on)."""
    unknown = set(data) - set(model.attribute_map)
    assert not unknown, f"{model.__name__} has no field(s) {unknown}"
    nested = {}
    for key, value in data.items():
        kind = model.openapi_types[key]
        if isinstance(value, dict) and hasattr(kfp_server_api, kind):
            _fits_model(getattr(kfp_server_api, kind), value)
            nested[key] = getattr(kfp_server_api, kind)(**value)
    model(**{**data, **nested})


def test_the_kfp_run_is_a_v2beta1_run_sent_to_the_runs_api(oracle_campaign, api, monkeypatch):
    url, recorder = api
    monkeypatch.setenv("KFP_TOKEN", "kfp-token")
    recorder.answers[("POST", "/apis/v2beta1/runs")] = {"run_id": "run-7", "state": "PENDING"}
    how = StartKfpRun(url, "pipe-1", "ver-2", "exp-3", "seals-al-runner", {"labeled_fraction": 0.9})
    assert continue_if_answered(oracle_campaign, how).endswith("KFP run run-7 started for the round after 0")
    ((method, path, headers, body),) = recorder.requests
    assert (method, path, headers["Authorization"]) == ("POST", "/apis/v2beta1/runs", "Bearer kfp-token")
    _fits_model(kfp_server_api.V2beta1Run, body)
    assert body["runtime_config"]["parameters"] == {
        "labeled_fraction": 0.9,
        "campaign_uri": oracle_campaign.storage.uri,
    }
    assert body["pipeline_version_reference"] == {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-2"}
    assert body["service_account"] == "seals-al-runner"
    assert oracle_campaign.state().round == 0, "the run, not the listener, runs the round"
    assert oracle_campaign.storage.exists("inbox/000/oracle.jsonl"), (
        "the answers were pulled into the inbox first"
    )
    assert continue_if_answered(oracle_campaign, how).endswith(
        "already continued (or continuing) by another event (events/continued/000.json)"
    )
    assert len(recorder.requests) == 1, "a round starts one run"


def _workflow(name: str, campaign_uri: str, phase: str, suspended: bool) -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": "seals-al"},
        "spec": {
            "workflowTemplateRef": {"name": "seals-al-rounds"},
            "arguments": {"parameters": [{"name": "campaign-uri", "value": campaign_uri}]},
        },
        "status": {
            "phase": phase,
            "nodes": {
                f"{name}-1": {
                    "id": f"{name}-1",
                    "name": f"{name}[0].wait-for-labels",
                    "type": "Suspend",
                    "phase": "Running" if suspended else "Succeeded",
                }
            },
        },
    }


def test_the_argo_workflow_of_the_campaign_is_resumed_through_the_server_api(
    oracle_campaign, api, monkeypatch
):
    url, recorder = api
    schema = json.loads(ARGO_SCHEMA.read_text())
    definitions = {"definitions": schema["definitions"]}

    def check(definition: str, instance: object) -> None:
        jsonschema.validate(
            instance, {**definitions, "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{definition}"}
        )

    uri = oracle_campaign.storage.uri
    listed = {
        "metadata": {"resourceVersion": "7"},
        "items": [
            _workflow("w-ours", uri, "Running", True),
            _workflow("w-other", "gs://b/another", "Running", True),
            _workflow("w-done", uri, "Succeeded", False),
            _workflow("w-busy", uri, "Running", False),
        ],
    }
    check("WorkflowList", listed)
    recorder.answers[("GET", "/api/v1/workflows/seals-al")] = listed
    monkeypatch.setenv("ARGO_TOKEN", "Bearer argo-token")
    line = continue_if_answered(oracle_campaign, ResumeArgo(url))
    assert line.endswith("Argo workflow(s) w-ours resumed after round 0")
    (listing, resume) = recorder.requests
    selector = "workflows.argoproj.io/workflow-template=seals-al-rounds"
    assert listing[1] == f"/api/v1/workflows/seals-al?listOptions.labelSelector={selector}"
    assert (resume[0], resume[1], resume[2]["Authorization"]) == (
        "PUT",
        "/api/v1/workflows/seals-al/w-ours/resume",
        "Bearer argo-token",
    )
    check("WorkflowResumeRequest", resume[3])
    assert resume[3] == {"name": "w-ours", "namespace": "seals-al"}


# -- end to end: a real Label Studio sends its webhooks, the next round commits --------------------------
def test_annotating_in_label_studio_commits_the_next_round_with_nothing_polling(
    tmp_path, clinc_slice, cache_dir, ls_env
):
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir)), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    tool = LabelStudio.of(campaign)
    tool.push()
    lines: list[str] = []

    def look(u: str) -> str:
        return continue_if_answered(Campaign(u, progress=False), RunHere())

    service = Listener([uri], look, SECRET, port=0, log=lines.append)
    service.start(catch_up=False)
    try:
        said = tool.subscribe(service.hook_url(uri), {SECRET_HEADER: SECRET})
        assert "sends its annotation events to" in said
        again = tool.subscribe(service.hook_url(uri), {SECRET_HEADER: SECRET})  # idempotent: one webhook
        person = Person(ls_env)
        project = tool.record()["project"]
        hooks = person.api("GET", "/api/webhooks/", params={"project": project})
        assert len(hooks) == 1, again
        assert hooks[0]["headers"] == {SECRET_HEADER: SECRET}
        truth = truth_of(clinc_slice)
        tasks = person.tasks(project)
        for item, task in sorted(tasks.items())[:-1]:
            person.annotate(task["id"], CONCEPT if truth[item] else f"not {CONCEPT}")
        time.sleep(1.5)
        assert campaign.state().round == 0, f"not answered yet: nothing continues ({lines})"
        item, task = sorted(tasks.items())[-1]
        person.annotate(task["id"], CONCEPT if truth[item] else f"not {CONCEPT}")
        deadline = time.monotonic() + 180

        def continued() -> dict | None:  # the claim, once its continuation is done (after the push)
            st = campaign.storage
            claim = st.read_json(continued_key(0)) if st.exists(continued_key(0)) else None
            return claim if claim and claim["done"] is not None else None

        while continued() is None:
            assert time.monotonic() < deadline, f"round 1 did not commit: {lines}"
            time.sleep(0.5)
        done = continued()
        assert done["by"] == "here"
        assert done["done"].startswith("round 1 committed"), done
        assert Campaign(uri, progress=False).status()["labeled"] == 100 + BATCH
        # The new batch went to Label Studio; an event about an old task changes nothing.
        record = tool.record()
        assert sum(1 for entry in record["tasks"].values() if entry["round"] == 1) == BATCH
        person.annotate(task["id"], CONCEPT)
        time.sleep(2)
        assert Campaign(uri, progress=False).state().round == 1
    finally:
        service.stop()
    assert any("round 1 committed" in line for line in lines), lines
    assert not any(SECRET in line for line in lines), "the secret is never logged"


# -- the command ----------------------------------------------------------------------------------------
def test_the_command_refuses_without_a_secret_or_what_its_continuation_needs(monkeypatch, capsys):
    from seals_al.cli import main

    monkeypatch.delenv("SEALS_LISTEN_SECRET", raising=False)
    assert main(["listen", "gs://b/c"]) == 2
    assert "set SEALS_LISTEN_SECRET to a shared secret of at least 16 characters" in capsys.readouterr().err
    monkeypatch.setenv("SEALS_LISTEN_SECRET", SECRET)
    assert main(["listen", "gs://b/c", "--then", "kfp", "--kfp-host", "http://k"]) == 2
    assert "listen --then kfp: give --kfp-pipeline-id, --kfp-version-id" in capsys.readouterr().err
    assert main(["listen", "gs://b/c", "--then", "argo"]) == 2
    assert "listen --then argo: give --argo-host" in capsys.readouterr().err


def test_the_service_catches_up_at_start_with_no_event(oracle_campaign, tmp_path):
    """An event sent while the service was down is not lost: at start it looks at every campaign
    once, and a batch answered meanwhile (here, by the oracle) is continued."""
    import os
    import signal
    import subprocess
    import sys

    from .labelstudio_server import free_port

    port = free_port()
    env = {**os.environ, "SEALS_LISTEN_SECRET": SECRET, "LABEL_TOOL": ""}
    log = (tmp_path / "listen.log").open("w")
    command = [
        sys.executable,
        "-m",
        "seals_al.cli",
        "listen",
        oracle_campaign.storage.uri,
        "--port",
        str(port),
    ]
    service = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, st = time.monotonic() + 120, oracle_campaign.storage
        # Done: the claim of round 0 records what its continuation did (after the commit and push).
        while not (st.exists(continued_key(0)) and st.read_json(continued_key(0))["done"]):
            assert service.poll() is None, (tmp_path / "listen.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "listen.log").read_text()
            time.sleep(0.5)
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.json() == {"campaigns": 1}
        hook = f"http://127.0.0.1:{port}/hooks/{campaign_id(oracle_campaign.storage.uri)}"
        assert post(hook, secret="wrong-secret-of-some-length").status_code == 401
    finally:
        service.send_signal(signal.SIGTERM)  # a pod stopping
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            service.kill()
            pytest.fail(f"not stopped 60 s after SIGTERM: {(tmp_path / 'listen.log').read_text()}")
        finally:
            log.close()
    assert service.returncode == 0
    out = (tmp_path / "listen.log").read_text()
    assert f"hook http://127.0.0.1:{port}/hooks/{campaign_id(oracle_campaign.storage.uri)}" in out
    assert "round 1 committed" in out
    assert SECRET not in out
