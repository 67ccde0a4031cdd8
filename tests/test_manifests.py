"""Cluster manifests, checked offline: the kustomize bases render with kubectl, RBAC is least
privilege, the Argo template is generated, valid against Argo's JSON Schema, suspends between
rounds and runs the package's image; the recurring run matches the KFP client's API."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kfp
import pytest
import yaml

from pipelines.argo import TEMPLATE, write_template
from pipelines.schedule import recurring_run_request
from seals_al.errors import SealsError
from seals_al.version import IMAGE

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "argo-workflows-v4.1-schema.json").read_text())


def kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders kustomize bases offline; it is on the machine image"
    out = subprocess.run([kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True)
    return list(yaml.safe_load_all(out.stdout))


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


def test_the_argo_template_is_the_generated_one(tmp_path):
    fresh = write_template(tmp_path / "t.yaml")
    assert fresh.read_text() == TEMPLATE.read_text(), "run `seals-al argo-template` and commit the result"


def test_the_argo_template_is_valid_and_suspends_between_rounds():
    template = yaml.safe_load(TEMPLATE.read_text())
    jsonschema.validate(template, SCHEMA)
    templates = {t["name"]: t for t in template["spec"]["templates"]}
    assert templates["wait-for-labels"]["suspend"] == {}
    steps = [group[0] for group in templates["round"]["steps"]]
    names = [s["name"] for s in steps]
    assert names == [
        "ingest", "train", "select", "report", "score", "label-push", "wait-for-labels",
        "wait-in-label-tool", "next-round", "same-round",
    ]  # fmt: skip
    by_name = {s["name"]: s for s in steps}
    wait, next_round, same = by_name["wait-for-labels"], by_name["next-round"], by_name["same-round"]
    assert wait["template"] == "wait-for-labels", "a real suspend step between two rounds"
    assert next_round["template"] == same["template"] == "round", "a round comes after the suspend"
    assert "keep-going" in next_round["when"]
    waiting = f"({next_round['when']} || {same['when']})"
    assert wait["when"] == f"{waiting} && {{{{workflow.parameters.wait}}}} == suspend"
    # wait=tool (label-studio, its older name): a step polls the tool instead (and pulls), no `argo resume`.
    polled = by_name["wait-in-label-tool"]
    mode = "{{workflow.parameters.wait}}"
    assert polled["when"] == f"{waiting} && ({mode} == tool || {mode} == label-studio)"
    assert templates["wait-in-label-tool"]["container"]["args"][:2] == [
        "wait",
        "{{workflow.parameters.campaign-uri}}",
    ]
    parameters = {p["name"]: p for p in template["spec"]["arguments"]["parameters"]}
    assert parameters["wait"]["enum"] == ["suspend", "tool", "label-studio"]
    assert parameters["wait"]["value"] == "suspend"
    # Resumed before any label came: ingest stages nothing, nothing else of the round runs, and
    # the same round waits again (train never fails on an empty stage).
    assert same["when"] == "{{steps.ingest.outputs.parameters.staged}} == false"
    assert same["arguments"]["parameters"] == [
        {"name": "remaining", "value": "{{inputs.parameters.remaining}}"}
    ]
    for name in ("train", "select", "report", "label-push"):
        assert by_name[name]["when"] == "{{steps.ingest.outputs.parameters.staged}} == true"
    # score-corpus=true: each round that trained a model scores what arrived since, into scores/.
    assert by_name["score"]["when"] == (
        "{{steps.ingest.outputs.parameters.staged}} == true && {{workflow.parameters.score-corpus}} == true"
    )
    assert parameters["score-corpus"]["value"] == "false"
    assert templates["score"]["container"]["args"][:3] == [
        "score",
        "{{workflow.parameters.campaign-uri}}",
        "--new-only",
    ]
    assert templates["label-push"]["container"]["args"] == [
        "label-tool", "push", "{{workflow.parameters.campaign-uri}}", "--if-configured",
    ]  # fmt: skip
    images = {t["container"]["image"] for t in templates.values() if "container" in t}
    assert images == {IMAGE}, "the same image (and tag) as the KFP components"
    commands = {tuple(t["container"]["command"]) for t in templates.values() if "container" in t}
    assert commands == {("seals-al",)}


def test_the_argo_template_runs_as_a_cluster_expects():
    spec = yaml.safe_load(TEMPLATE.read_text())["spec"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["podGC"] == {"strategy": "OnPodSuccess"}
    assert set(spec["ttlStrategy"]) == {"secondsAfterSuccess", "secondsAfterFailure"}
    assert spec["activeDeadlineSeconds"] >= 7 * 24 * 3600, "long enough for people to label"
    assert "volumeClaimTemplates" not in spec, "no volume claim: steps share only object storage"
    assert spec["volumes"] == [{"name": "cache", "emptyDir": {}}]
    containers = {t["name"]: t for t in spec["templates"] if "container" in t}
    assert set(containers) == {
        "ingest",
        "train",
        "select",
        "report",
        "score",
        "label-push",
        "wait-in-label-tool",
    }
    for name, t in containers.items():
        c = t["container"]
        assert set(c["resources"]["requests"]) == {"cpu", "memory"}, name
        assert set(c["resources"]["limits"]) == {"cpu", "memory"}, name
        assert c["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "cache", "mountPath": "/cache"} in c["volumeMounts"]
        assert {"name": "SEALS_CACHE_DIR", "value": "/cache/seals-al-cache"} in c["env"]
        # Not retried: a wait that timed out is re-submitted; a score with --new-only retried after
        # it recorded what it scored would find nothing new.
        if name not in ("wait-in-label-tool", "score"):
            assert int(t["retryStrategy"]["limit"]) == 2, f"{name} is idempotent and retried"
        # Only the steps that talk to Label Studio see its Secret, which is optional.
        secrets = [e for e in c["env"] if "valueFrom" in e]
        if name in ("ingest", "label-push", "wait-in-label-tool"):
            assert secrets == [
                {
                    "name": variable,
                    "valueFrom": {"secretKeyRef": {"name": "label-tool", "key": key, "optional": True}},
                }
                for key, variable in (
                    ("tool", "LABEL_TOOL"),
                    ("url", "LABEL_TOOL_URL"),
                    ("api-key", "LABEL_TOOL_API_KEY"),
                )
            ], name
        else:
            assert secrets == [], name
    assert containers["ingest"]["container"]["args"][-1] == "--staged-file=/tmp/staged"


def test_a_broken_template_fails_the_schema():
    template = yaml.safe_load(TEMPLATE.read_text())
    template["spec"]["templates"][0]["container"]["args"] = "not a list"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(template, SCHEMA)


def test_kustomize_bases_render_with_least_privilege():
    base = by_kind(kustomize(ROOT / "manifests" / "base"))
    assert set(base) == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"}
    rules = base["Role"]["rules"]
    for rule in rules:
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule[field], field
        assert not set(rule["verbs"]) & {"delete", "deletecollection", "escalate", "bind", "impersonate"}
    assert rules == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]
    binding = base["RoleBinding"]
    assert binding["roleRef"]["name"] == base["Role"]["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": base["ServiceAccount"]["metadata"]["name"],
            "namespace": "seals-al",
        }
    ]
    argo = by_kind(kustomize(ROOT / "manifests" / "argo"))
    template = argo["WorkflowTemplate"]
    assert template["metadata"]["namespace"] == "seals-al"
    assert template["spec"]["serviceAccountName"] == base["ServiceAccount"]["metadata"]["name"]
    env_from = template["spec"]["templates"][0]["container"]["envFrom"][0]["configMapRef"]["name"]
    assert env_from == base["ConfigMap"]["metadata"]["name"], "the config map is referenced by name"


def test_the_kubeflow_profile_overlay_grants_what_kfp_driver_and_launcher_read_and_no_more():
    profile = kustomize(ROOT / "manifests" / "kubeflow-profile")
    kinds = by_kind(profile)
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap"}, (
        "the profile owns its namespace"
    )
    namespaces = {d["metadata"]["namespace"] for d in profile}
    assert namespaces == {"kubeflow-user-example-com"}
    rules = kinds["Role"]["rules"]
    assert {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"],
            "verbs": ["get", "list", "watch"]} in rules  # fmt: skip
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]} in rules
    assert {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
            "verbs": ["create", "get", "list", "delete"]} in rules  # fmt: skip
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "secrets" not in rule["resources"], "no secret is read: GCS through Workload Identity"
    account = kinds["ServiceAccount"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    request = recurring_run_request(ROOT / "manifests" / "recurring-run" / "one-round.yaml")
    assert request["service_account"] == account["metadata"]["name"]


def test_the_recurring_run_matches_the_kfp_client_and_the_pipeline():
    request = recurring_run_request(ROOT / "manifests" / "recurring-run" / "one-round.yaml")
    inspect.signature(kfp.Client.create_recurring_run).bind(None, experiment_id="e", **request)
    assert Path(request["pipeline_package_path"]) == ROOT / "pipelines" / "compiled" / "seals_one_round.yaml"
    spec = next(yaml.safe_load_all(Path(request["pipeline_package_path"]).read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    required = {name for name, p in inputs.items() if not p.get("isOptional")}
    assert required <= set(request["params"]) <= set(inputs)
    assert request["max_concurrency"] == 1


def test_a_bad_recurring_run_definition_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "job_name: x\npipeline_package_path: nowhere.yaml\ncron_expression: '* * * * *'\nparams: {}\n"
    )
    with pytest.raises(SealsError, match="six fields"):
        recurring_run_request(bad)


def test_schedule_takes_the_profile_namespace_and_a_token_from_the_environment():
    import kfp

    from pipelines.schedule import client_arguments

    env = {"KFP_NAMESPACE": "team-a", "KFP_TOKEN": "t0ken"}
    arguments = client_arguments("https://kfp.example", None, env)
    assert arguments == {"host": "https://kfp.example", "namespace": "team-a", "existing_token": "t0ken"}
    inspect.signature(kfp.Client).bind(**arguments)
    assert client_arguments("h", "team-b", env)["namespace"] == "team-b", "the flag wins"
    assert client_arguments("h", None, {}) == {"host": "h"}


def test_the_label_tool_secret_example_has_the_keys_every_pipeline_reads():
    from pipelines._cluster import DEFAULT, LABEL_TOOL_KEYS
    from pipelines.argo import LABEL_TOOL_SECRET

    secret = yaml.safe_load((ROOT / "manifests" / "label-tool" / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == DEFAULT.label_tool_secret == LABEL_TOOL_SECRET
    assert set(secret["stringData"]) == set(LABEL_TOOL_KEYS)
    assert secret["stringData"]["api-key"].startswith("REPLACE"), "never a real token in git"


def test_the_listener_deployment_runs_the_listen_command_behind_its_service_and_policy():
    from seals_al.cli import build_parser
    from seals_al.version import IMAGE

    rendered = by_kind(kustomize(ROOT / "manifests" / "listen"))
    deployment, service, policy = (rendered[k] for k in ("Deployment", "Service", "NetworkPolicy"))
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    assert pod["spec"]["serviceAccountName"] == "seals-al-runner"
    args = build_parser().parse_args(container["args"])  # every flag the manifest gives exists
    assert (args.command, args.host, args.then) == ("listen", "0.0.0.0", "argo")
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env["SEALS_LISTEN_SECRET"] == {"name": "seals-al-listen", "key": "secret"}, "required"
    assert {env[v]["key"] for v in ("LABEL_TOOL", "LABEL_TOOL_URL", "LABEL_TOOL_API_KEY")} == {
        "tool",
        "url",
        "api-key",
    }
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ((rule,),) = [policy["spec"]["ingress"]]
    assert rule["ports"] == [{"protocol": "TCP", "port": args.port}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    secret = yaml.safe_load((ROOT / "manifests" / "listen" / "secret.example.yaml").read_text())
    assert secret["metadata"]["name"] == "seals-al-listen"
    assert all(v.startswith("REPLACE") for v in secret["stringData"].values()), "never a real secret"
