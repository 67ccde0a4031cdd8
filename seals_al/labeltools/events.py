"""Continue a campaign when its labeling tool says the open batch is answered, with nothing waiting.

:func:`continue_if_answered` is what ``seals-al listen`` does on each event of the tool (a Label
Studio webhook): it asks the tool how far people are (never trusting the event's own payload, so
events may come twice, late or out of order), and once the fraction is reached it pulls the answers
into the inbox and continues the campaign in one of three ways:

- :class:`RunHere`: the round runs in this process (a laptop, a single VM);
- :class:`StartKfpRun`: a run of the one-round pipeline through the KFP REST API
  (``POST /apis/v2beta1/runs``; the body is KFP's ``v2beta1Run``);
- :class:`ResumeArgo`: the campaign's suspended workflow resumed through the Argo Server API
  (``PUT /api/v1/workflows/{namespace}/{name}/resume``, a ``WorkflowResumeRequest``).

Idempotent per round: a continuation claims the round first (``events/continued/NNN.json``,
created only if absent, so two listeners or two events never continue a round twice); a claim whose
continuation failed is released, and one left by a process that died is taken over after
:data:`STALE_SECONDS`. A second run of a round would do no harm anyway (the campaign's lease, and an
ingest with nothing new changes nothing); the claim saves the pods.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import requests

from seals_al.campaign.layout import continued_key
from seals_al.errors import SealsError, cut
from seals_al.labeltools.base import check_fraction
from seals_al.labeltools.loop import push_if_configured
from seals_al.labeltools.registry import tool_of
from seals_al.storage.base import AlreadyExistsError, ChangedError

if TYPE_CHECKING:
    from seals_al.campaign import Campaign

STALE_SECONDS = 3600.0  # a claim older than this, on a round still open, was left by a dead process
TIMEOUT_SECONDS = 30.0
ENV_KFP_TOKEN = "KFP_TOKEN"  # a bearer token for the KFP API, when its endpoint needs one
KFP_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # a projected token (kfp.Client's default)
ENV_ARGO_TOKEN = "ARGO_TOKEN"  # the Argo Server's token ("Bearer ..." as `argo auth token` prints it)


class Continuation(Protocol):
    """How the campaign goes on once a batch is answered; returns what it did, as a line."""

    name: str

    def __call__(self, campaign: Campaign, r: int) -> str: ...


class RunHere:
    """The next round, in this process: ingest (what :func:`continue_if_answered` just pulled),
    train, select, push the new batch."""

    name = "here"

    def __call__(self, campaign: Campaign, r: int) -> str:
        metrics = campaign.round()
        if metrics is None:
            return f"round {r}: nothing new to ingest"
        pushed = push_if_configured(campaign)
        return f"round {metrics['round']} committed" + (f"; {pushed.summary()}" if pushed else "")


def _token(variable: str) -> str:
    """The API's token: ``$variable``, else (KFP in a profile namespace) the pod's projected service
    account token where kfp.Client reads it."""
    token = os.environ.get(variable, "").strip()
    if not token and variable == ENV_KFP_TOKEN:
        path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", KFP_TOKEN_PATH)
        if os.path.isfile(path):
            with open(path) as f:
                token = f.read().strip()
    return token


def _send(method: str, url: str, token_variable: str, body: dict | None = None) -> object:
    """One call of a pipeline API; its JSON answer, or an error naming the URL and the answer."""
    token = _token(token_variable)
    headers = {"Authorization": token if " " in token else f"Bearer {token}"} if token else {}
    try:
        response = requests.request(method, url, json=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as e:
        raise SealsError(f"{method} {url}: {type(e).__name__}; is the API reachable from here?") from e
    if response.status_code >= 400:
        detail = cut(" ".join(response.text.split()), 300)
        raise SealsError(
            f"{method} {url}: HTTP {response.status_code}: {detail} (token from ${token_variable})"
        )
    try:
        return response.json() if response.content else None
    except ValueError as e:
        raise SealsError(f"{method} {url}: the answer is not JSON; is it the API's own address?") from e


@dataclass(frozen=True)
class StartKfpRun:
    """A run of the one-round pipeline, uploaded to KFP as ``pipeline_id`` / ``version_id``."""

    host: str  # e.g. https://kfp.example.com/pipeline (what kfp.Client(host=...) takes)
    pipeline_id: str
    version_id: str
    experiment_id: str = ""
    service_account: str = ""  # "" = the namespace's default (pipeline-runner)
    parameters: dict = field(default_factory=dict)  # more root parameters of the one-round pipeline
    name: str = "kfp"

    def body(self, campaign_uri: str, r: int) -> dict:
        """The request body: a ``v2beta1Run`` (KFP's published API, kfp_server_api.V2beta1Run)."""
        body: dict = {
            "display_name": f"seals-al {campaign_uri} after round {r}",
            "description": f"started by seals-al listen: the batch of round {r} is answered",
            "pipeline_version_reference": {
                "pipeline_id": self.pipeline_id,
                "pipeline_version_id": self.version_id,
            },
            "runtime_config": {"parameters": {**self.parameters, "campaign_uri": campaign_uri}},
        }
        if self.experiment_id:
            body["experiment_id"] = self.experiment_id
        if self.service_account:
            body["service_account"] = self.service_account
        return body

    def __call__(self, campaign: Campaign, r: int) -> str:
        url = f"{self.host.rstrip('/')}/apis/v2beta1/runs"
        answer = _send("POST", url, ENV_KFP_TOKEN, self.body(campaign.storage.uri, r))
        run = answer.get("run_id") if isinstance(answer, dict) else None
        if not isinstance(run, str):
            raise SealsError(f"POST {url}: expected a run with a run_id, got {cut(str(answer), 200)}")
        return f"KFP run {run} started for the round after {r}"


@dataclass(frozen=True)
class ResumeArgo:
    """The campaign's workflow (from the ``seals-al-rounds`` template, parameter ``campaign-uri``),
    suspended in its wait, resumed."""

    host: str  # the Argo Server, e.g. https://argo.example.com:2746
    namespace: str = "seals-al"
    template: str = "seals-al-rounds"
    name: str = "argo"

    def list_url(self) -> str:
        selector = f"workflows.argoproj.io/workflow-template={self.template}"
        return (
            f"{self.host.rstrip('/')}/api/v1/workflows/{self.namespace}?listOptions.labelSelector={selector}"
        )

    def suspended(self, workflows: object, campaign_uri: str) -> list[str]:
        """The names of the running workflows of this campaign with a suspended node (from a
        ``WorkflowList``)."""
        items = workflows.get("items") if isinstance(workflows, dict) else None
        names = []
        for workflow in items or []:
            spec, status = workflow.get("spec") or {}, workflow.get("status") or {}
            given = {
                p.get("name"): p.get("value") for p in (spec.get("arguments") or {}).get("parameters") or []
            }
            nodes = (status.get("nodes") or {}).values()
            waiting = any(n.get("type") == "Suspend" and n.get("phase") == "Running" for n in nodes)
            if given.get("campaign-uri") == campaign_uri and status.get("phase") == "Running" and waiting:
                names.append(workflow["metadata"]["name"])
        return sorted(names)

    def body(self, workflow: str) -> dict:
        """The request body: a ``WorkflowResumeRequest`` (Argo's published API)."""
        return {"name": workflow, "namespace": self.namespace}

    def __call__(self, campaign: Campaign, r: int) -> str:
        names = self.suspended(_send("GET", self.list_url(), ENV_ARGO_TOKEN), campaign.storage.uri)
        if not names:
            raise SealsError(
                f"{self.host}: no running workflow of template {self.template} in namespace "
                f"{self.namespace} is suspended for campaign {campaign.storage.uri}; submit one "
                "(manifests/README.md), or resume it by hand"
            )
        for name in names:
            url = f"{self.host.rstrip('/')}/api/v1/workflows/{self.namespace}/{name}/resume"
            _send("PUT", url, ENV_ARGO_TOKEN, self.body(name))
        return f"Argo workflow(s) {', '.join(names)} resumed after round {r}"


def _now() -> datetime:
    return datetime.now(UTC)


def _claim(campaign: Campaign, r: int, how: str) -> str | None:
    """Claim round ``r``'s continuation; its version token, or None when it is another's (or done)."""
    st, key = campaign.storage, continued_key(r)
    mine = json.dumps({"round": r, "by": how, "at": _now().isoformat(), "done": None}).encode()
    try:
        return st.create(key, mine)
    except AlreadyExistsError:
        pass
    data, token = st.read_versioned(key)
    try:
        claim = json.loads(data)
        done, at = claim.get("done"), datetime.fromisoformat(claim["at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        done, at = None, datetime.min  # unreadable: taken over
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if done is not None or (_now() - at).total_seconds() < STALE_SECONDS:
        return None
    try:
        return st.replace_if(key, mine, token)
    except ChangedError:
        return None


def continue_if_answered(campaign: Campaign, how: Continuation, fraction: float = 1.0) -> str:
    """Continue the campaign if the open batch is answered (see the module); returns a line
    saying what happened. Errors of the tool or the API are raised (nothing is claimed then)."""
    check_fraction(fraction)
    tool = tool_of(campaign)
    if tool is None:
        raise SealsError(f"{campaign.storage.uri}: the campaign has no labeling tool (label_tool)")
    r = campaign.state().round
    if r < 0:
        return f"{campaign.storage.uri}: no batch yet; nothing to continue"
    progress = tool.progress()
    line = f"round {r}: {progress.line(tool.title)}"
    if not progress.reached(fraction):
        return line + "; waiting"
    token = _claim(campaign, r, how.name)
    if token is None:
        return line + f"; already continued (or continuing) by another event ({continued_key(r)})"
    try:
        tool.pull()
        done = how(campaign, r)
    except Exception:  # whatever failed, the claim is released (the next event tries again)
        campaign.storage.delete_if(continued_key(r), token)
        raise
    finished = {"round": r, "by": how.name, "at": _now().isoformat(), "done": done}
    campaign.storage.replace_if(continued_key(r), json.dumps(finished).encode(), token)
    return f"{line}; {done}"
