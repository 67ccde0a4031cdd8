"""`seals-al schedule`: create a KFP recurring run from manifests/recurring-run/*.yaml.

A plugin command (entry point group ``seals_al.commands``): kfp is imported only when it runs.
"""

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from seals_al.errors import SealsError

FIELDS = (
    "job_name",
    "description",
    "pipeline_package_path",
    "cron_expression",
    "max_concurrency",
    "no_catchup",
    "service_account",
    "params",
)


def recurring_run_request(path: str | Path) -> dict:
    """The keyword arguments of ``kfp.Client.create_recurring_run`` that a definition file holds,
    with the pipeline package path made absolute; unknown or missing fields are errors."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise SealsError(f"{path}: expected a mapping")
    unknown = sorted(set(data) - set(FIELDS))
    missing = [f for f in ("job_name", "pipeline_package_path", "cron_expression", "params") if f not in data]
    if unknown or missing:
        raise SealsError(f"{path}: unknown field(s) {unknown}, missing field(s) {missing}")
    if len(str(data["cron_expression"]).split()) != 6:
        raise SealsError(f"{path}: cron_expression needs KFP's six fields (seconds first)")
    package = (path.parent / data["pipeline_package_path"]).resolve()
    if not package.is_file():
        raise SealsError(f"{path}: pipeline_package_path {package} does not exist")
    return {**data, "pipeline_package_path": str(package)}


def client_arguments(host: str, namespace: str | None, env: Mapping[str, str]) -> dict:
    """What ``kfp.Client`` gets: the host, the profile namespace (the flag, else $KFP_NAMESPACE)
    and a bearer token from $KFP_TOKEN when set (e.g. ``kubectl create token`` for the runner's
    service account, or a user's identity token behind an auth proxy), never from the command
    line, where it would land in shell history and process lists."""
    arguments: dict = {"host": host}
    namespace = namespace or env.get("KFP_NAMESPACE")
    if namespace:
        arguments["namespace"] = namespace
    if env.get("KFP_TOKEN"):
        arguments["existing_token"] = env["KFP_TOKEN"]
    return arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule", help="create a KFP recurring run from a definition file (needs a KFP host)"
    )
    p.add_argument("definition", help="e.g. manifests/recurring-run/one-round.yaml")
    p.add_argument("--host", required=True, help="the KFP API endpoint")
    p.add_argument(
        "--namespace",
        default=None,
        help="the KFP profile namespace to create it in (default: $KFP_NAMESPACE; multi-user KFP needs one)",
    )
    p.add_argument("--experiment", default="seals-al")
    p.set_defaults(handler=_schedule)


def _schedule(args: argparse.Namespace, console) -> int:
    import kfp

    request = recurring_run_request(args.definition)
    client = kfp.Client(**client_arguments(args.host, args.namespace, os.environ))
    experiment = client.create_experiment(args.experiment)
    run = client.create_recurring_run(experiment_id=experiment.experiment_id, **request)
    console.print(f"recurring run {run.recurring_run_id} created in experiment {args.experiment}")
    return 0
