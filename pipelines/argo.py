"""The Argo Workflows variant (docs/ARCHITECTURE.md, "Pausing for labels"): a WorkflowTemplate
whose rounds are separated by a real `suspend` step, resumed with `argo resume` once labels are
in (by hand, or by `seals-al listen` when the labeling tool says the batch is answered), or
(parameter ``wait=tool``) by a step that waits on the labeling tool.
Generated with hera; the steps run the same image and the same library stages as the KFP
components, through the CLI.

`seals-al argo-template` writes manifests/argo/seals-al-rounds.yaml (a plugin command: the core
package never imports hera).
"""

import argparse
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "manifests" / "argo" / "seals-al-rounds.yaml"
SERVICE_ACCOUNT = "seals-al-runner"
CONFIG_MAP = "seals-al-config"


CACHE = "/cache"  # each step's own scratch volume (emptyDir): its cache (seals_al.storage)
LABEL_TOOL_SECRET = "label-tool"  # keys: tool, url, api-key (manifests/label-tool/secret.example.yaml)
DEADLINE_SECONDS = 30 * 24 * 3600  # the whole campaign, waits for people included
RETRY = {"limit": "2", "retryPolicy": "Always", "backoff": {"duration": "60s", "factor": "2"}}


def workflow_template():
    """The template: round(remaining) = ingest (pulling from the labeling tool when configured),
    then, if it staged labels, train, select, report, (with score-corpus) score the new items, and
    the push to the labeling tool; then, if the report says keep going and rounds remain (or nothing
    was staged: resumed too early), wait (suspend, or poll the tool) and run the next round (the
    same round again when nothing was staged)."""
    from hera.workflows import Container, Parameter, Step, Steps, Suspend, WorkflowTemplate
    from hera.workflows.models import (
        Capabilities,
        ConfigMapEnvSource,
        EmptyDirVolumeSource,
        EnvFromSource,
        EnvVar,
        EnvVarSource,
        PodGC,
        PodSecurityContext,
        ResourceRequirements,
        RetryStrategy,
        SeccompProfile,
        SecretKeySelector,
        SecurityContext,
        TTLStrategy,
        ValueFrom,
        Volume,
        VolumeMount,
    )

    from pipelines._cluster import LABEL_TOOL_KEYS, LABEL_TOOL_STEPS, RESOURCES, RETRIED
    from seals_al.settings import WAIT_TIMEOUT_SECONDS
    from seals_al.storage.uris import WORKSPACE_CACHE
    from seals_al.version import IMAGE, __version__

    campaign = "{{workflow.parameters.campaign-uri}}"
    seccomp = SeccompProfile(type="RuntimeDefault")
    security = SecurityContext(
        run_as_non_root=True,
        run_as_user=10001,
        allow_privilege_escalation=False,
        read_only_root_filesystem=False,
        capabilities=Capabilities(drop=["ALL"]),
        seccomp_profile=seccomp,
    )
    env_from = [EnvFromSource(config_map_ref=ConfigMapEnvSource(name=CONFIG_MAP, optional=True))]
    env = [EnvVar(name="SEALS_CACHE_DIR", value=f"{CACHE}/{WORKSPACE_CACHE}")]
    # The labeling tool steps read its name, URL and key from an optional Secret.
    label_tool_env = [
        EnvVar(
            name=variable,
            value_from=EnvVarSource(
                secret_key_ref=SecretKeySelector(name=LABEL_TOOL_SECRET, key=key, optional=True)
            ),
        )
        for key, variable in LABEL_TOOL_KEYS.items()
    ]
    # Steps share nothing but object storage, read by range: each pod's cache is its own scratch
    # volume, so no volume claim (and no ReadWriteMany class) is needed.
    mounts = [VolumeMount(name="cache", mount_path=CACHE)]

    def step_container(name: str, component: str, args: list[str], **extra) -> Container:
        res = RESOURCES[component]
        return Container(
            name=name,
            image=IMAGE,
            command=["seals-al"],
            args=args,
            security_context=security,
            env=env + (label_tool_env if component in LABEL_TOOL_STEPS else []),
            env_from=env_from,
            volume_mounts=mounts,
            resources=ResourceRequirements(
                requests={"cpu": res.cpu, "memory": res.memory},
                limits={"cpu": res.cpu_limit, "memory": res.memory_limit},
            ),
            retry_strategy=RetryStrategy(**RETRY) if component in RETRIED else None,
            **extra,
        )

    with WorkflowTemplate(
        name="seals-al-rounds",
        entrypoint="campaign",
        service_account_name=SERVICE_ACCOUNT,
        labels={"app.kubernetes.io/name": "seals-al", "app.kubernetes.io/version": __version__},
        security_context=PodSecurityContext(
            run_as_non_root=True, run_as_user=10001, fs_group=0, seccomp_profile=seccomp
        ),
        pod_gc=PodGC(strategy="OnPodSuccess"),  # failed pods stay for their logs
        ttl_strategy=TTLStrategy(seconds_after_success=24 * 3600, seconds_after_failure=7 * 24 * 3600),
        active_deadline_seconds=DEADLINE_SECONDS,
        volumes=[Volume(name="cache", empty_dir=EmptyDirVolumeSource())],
        arguments=[
            Parameter(name="campaign-uri", description="an existing campaign (seals-al init) on gs://"),
            Parameter(name="max-rounds", value="10"),
            Parameter(name="target-metric", value=""),
            Parameter(name="target-value", value="1.0"),
            Parameter(
                name="wait",
                value="suspend",
                enum=["suspend", "tool", "label-studio"],
                description="between rounds: suspend until resumed (`argo resume`, or `seals-al "
                "listen` on the labeling tool's webhook), or poll the labeling tool (tool; "
                "label-studio is its older name)",
            ),
            Parameter(name="labeled-fraction", value="1.0"),
            Parameter(
                name="score-corpus",
                value="false",
                enum=["false", "true"],
                description="after each round, score the items not scored before with its model "
                "(Parquet under the campaign's scores/)",
            ),
            Parameter(name="wait-timeout-seconds", value=str(int(WAIT_TIMEOUT_SECONDS))),
        ],
    ) as template:
        ingest = step_container(
            "ingest",
            "label-ingest",
            ["ingest", campaign, "--staged-file=/tmp/staged"],
            outputs=[Parameter(name="staged", value_from=ValueFrom(path="/tmp/staged"))],
        )
        train = step_container("train", "train", ["train", campaign])
        select = step_container("select", "select-round", ["select", campaign])
        report = step_container(
            "report",
            "report",
            [
                "report",
                campaign,
                "--out=/tmp/report",
                "--target-metric={{workflow.parameters.target-metric}}",
                "--target-value={{workflow.parameters.target-value}}",
            ],
            outputs=[Parameter(name="keep-going", value_from=ValueFrom(path="/tmp/report/keep_going"))],
        )
        score = step_container(
            "score",
            "score",
            [
                "score",
                campaign,
                "--new-only",
                f"--out={campaign}/scores/{{{{workflow.name}}}}-{{{{inputs.parameters.remaining}}}}.parquet",
            ],
        )
        push = step_container("label-push", "label-push", ["label-tool", "push", campaign, "--if-configured"])
        wait = Suspend(name="wait-for-labels")
        wait_tool = step_container(
            "wait-in-label-tool",
            "wait-for-labels",
            [
                "wait",
                campaign,
                "--fraction={{workflow.parameters.labeled-fraction}}",
                "--timeout-seconds={{workflow.parameters.wait-timeout-seconds}}",
            ],
        )
        staged = "{{steps.ingest.outputs.parameters.staged}} == true"
        keep_going = "{{steps.report.outputs.parameters.keep-going}} == true"
        remaining = "{{inputs.parameters.remaining}}"
        advanced = f"{staged} && {keep_going} && {remaining} > 1"
        early = "{{steps.ingest.outputs.parameters.staged}} == false"  # resumed with no new labels
        mode = "{{workflow.parameters.wait}}"
        with Steps(name="round", inputs=[Parameter(name="remaining")]) as round_steps:
            Step(name="ingest", template=ingest)
            for name, container in (("train", train), ("select", select), ("report", report)):
                Step(name=name, template=container, when=staged)
            Step(
                name="score",
                template=score,
                when=f"{staged} && {{{{workflow.parameters.score-corpus}}}} == true",
            )
            Step(name="label-push", template=push, when=staged)
            waiting = f"({advanced} || {early})"
            Step(name="wait-for-labels", template=wait, when=f"{waiting} && {mode} == suspend")
            Step(
                name="wait-in-label-tool",
                template=wait_tool,
                when=f"{waiting} && ({mode} == tool || {mode} == label-studio)",
            )
        with round_steps:
            Step(
                name="next-round",
                template=round_steps,
                arguments={"remaining": "{{=asInt(inputs.parameters.remaining) - 1}}"},
                when=advanced,
            )
            Step(name="same-round", template=round_steps, arguments={"remaining": remaining}, when=early)
        with Steps(name="campaign"):
            Step(
                name="rounds",
                template=round_steps,
                arguments={"remaining": "{{workflow.parameters.max-rounds}}"},
            )
    return template


def write_template(path: str | Path = TEMPLATE) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Generated by `seals-al argo-template` (pipelines/argo.py); do not edit by hand.\n"
    path.write_text(header + workflow_template().to_yaml())
    return path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "argo-template", help="write the Argo WorkflowTemplate with suspend steps (needs hera)"
    )
    p.add_argument("--out", default=str(TEMPLATE))
    p.set_defaults(handler=_write)


def _write(args: argparse.Namespace, console) -> int:
    console.print(f"wrote {write_template(args.out)}", highlight=False)
    return 0
