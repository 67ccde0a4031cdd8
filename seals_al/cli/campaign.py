"""The campaign commands: init, round, the stages of a round, status, report, export, score."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from seals_al.errors import SealsError
from seals_al.settings import (
    EXPORT_PRECISIONS,
)


def add_campaign_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a campaign from a YAML config")
    p.add_argument(
        "config", help="campaign YAML: concept, data, seed_labels, strategy, k, batch_size, budget, ..."
    )
    p.add_argument("campaign", help="where the campaign lives: a folder or gs://bucket/prefix")
    p.set_defaults(handler=_init)
    p = sub.add_parser("round", help="ingest new labels, retrain, select and publish the next batch")
    p.add_argument("campaign")
    p.set_defaults(handler=_round)
    p = sub.add_parser(
        "refresh",
        help="embed new items into the campaign's published store and add them to its index",
        description="Bring the campaign's published embeddings and index up to date with its items: "
        "items new since the store was made are embedded (Beam) and appended, and added to the "
        "index. Options it does not know are Beam pipeline options.",
    )
    p.add_argument("campaign")
    p.set_defaults(handler=_refresh)
    p = sub.add_parser("status", help="rounds, labels, positives, pool size and what the campaign waits for")
    p.add_argument("campaign")
    p.set_defaults(handler=_status)
    p = sub.add_parser(
        "unlock",
        help="break the campaign's lease, for a stage that died and left one that has not expired",
        description="Remove the campaign's LOCK whoever holds it. Safe for the data: a stage still "
        "running finds its lease gone before it commits and commits nothing (it exits 2).",
    )
    p.add_argument("campaign")
    p.set_defaults(handler=_unlock)
    # The stages of a round, one command each: what the Argo template and scripts run.
    for name, text in (
        ("ingest", "stage 1 of a round: validate and stage new label files (exit 0 with nothing new)"),
        ("train", "stage 2: fit and evaluate the classifier on the staged labels"),
        ("select", "stage 3: select the batch, publish and commit the round"),
        ("oracle", "simulation: label the open batch from the campaign's truth column"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("campaign")
        if name == "ingest":
            p.add_argument(
                "--staged-file", help="write true or false there: whether new labels were staged (Argo)"
            )
        p.set_defaults(handler=_stage, stage=name)
    p = sub.add_parser(
        "report", help="the last round's report (HTML, Markdown, metrics) and whether to keep going"
    )
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="folder for report.html, summary.md, metrics.json")
    p.add_argument("--target-metric", default="", help="stop once this metric reaches --target-value")
    p.add_argument("--target-value", type=float, default=1.0)
    p.set_defaults(handler=_report)
    p = sub.add_parser(
        "export",
        help="write a round's model as portable JSON: classifier, embedding model and version, "
        "concept, round, labeled-set digest, operating thresholds",
    )
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="the model file to write (.json; local or gs://)")
    p.add_argument("--round", type=int, help="default: the newest trained round")
    p.add_argument("--precisions", default=",".join(map(str, EXPORT_PRECISIONS)), help=_PRECISIONS)
    p.set_defaults(handler=_export)
    p = sub.add_parser(
        "score",
        help="score every item with a round's model and write them ranked",
        description="Score the campaign's items (as its data is now) with a round's classifier and "
        "write a Parquet file of id, score (P(concept)) and rank, with the count of items above each "
        "operating threshold. The stored embeddings are scored in this process; options it does not "
        "know are Beam pipeline options (e.g. --runner), and with any the scoring runs as a Beam "
        "pipeline (RunInference).",
    )
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="the Parquet file to write (local or gs://)")
    p.add_argument("--new-only", action="store_true", help="only items no earlier score run scored")
    p.add_argument("--round", type=int, help="default: the newest trained round")
    p.add_argument("--model", help="an exported model (seals-al export) instead of the campaign's")
    p.add_argument("--precisions", default=",".join(map(str, EXPORT_PRECISIONS)), help=_PRECISIONS)
    p.set_defaults(handler=_score)


_PRECISIONS = "operating thresholds: the evaluation-split precisions to reach, comma-separated"


def _export(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.export import export_round, is_exported_model, parse_precisions, write_model
    from seals_al.storage import check_output_file

    precisions = parse_precisions(args.precisions)
    campaign = Campaign(args.campaign)
    check_output_file(args.out, campaign.storage.uri, "model", is_exported_model)
    model = export_round(campaign, args.round, precisions)
    where = write_model(model, args.out)
    console.print(f"round {model.round} model of {model.concept!r}: {where}", highlight=False)
    for t in model.thresholds:
        at = (
            "not reached"
            if t["threshold"] is None
            else f"P >= {t['threshold']:.4f}, recall {t['recall']:.3f}"
        )
        console.print(f"  precision {t['precision']:g}: {at}", highlight=False)
    return 0


def _score(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.export import parse_precisions
    from seals_al.score.corpus import is_scores_file, score_campaign
    from seals_al.storage import check_output_file

    if not args.out.endswith(".parquet"):
        raise SealsError(f"{args.out}: the output must be a .parquet file")
    campaign = Campaign(args.campaign)
    check_output_file(args.out, campaign.storage.uri, "scores file", is_scores_file)
    summary = score_campaign(
        campaign,
        args.out,
        new_only=args.new_only,
        r=args.round,
        model_uri=args.model,
        precisions=parse_precisions(args.precisions),
        beam_args=args.beam_args,
    )
    for line in summary.lines():
        console.print(line, highlight=False)
    return 0


def _stage(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign

    campaign = Campaign(args.campaign)
    if args.stage == "ingest":
        _sync_first(campaign, console)
        staged = campaign.ingest()
        console.print(
            "no new labels: nothing to do"
            if staged is None
            else f"round {staged.round}: {staged.new_labels} new label(s), {staged.relabels} relabel(s), "
            f"{staged.labeled} labeled, from {', '.join(staged.files)}",
            highlight=False,
        )
        if args.staged_file:
            from seals_al.storage.files import write_text_atomic

            write_text_atomic(args.staged_file, "true" if staged is not None else "false")
    elif args.stage == "train":
        console.print(f"trained: {campaign.train()}", highlight=False)
    elif args.stage == "select":
        metrics = campaign.select()
        where = campaign.storage.where(campaign.keys(metrics["round"]).to_label)
        console.print(
            f"round {metrics['round']} committed; batch of {metrics['batch']}: {where}", highlight=False
        )
        for line in campaign.intake(metrics["round"]):
            console.print(f"  {line}", highlight=False)
    else:
        from seals_al.labeltools.oracle import label_open_batch

        key = label_open_batch(campaign)
        console.print(f"labels: {campaign.storage.where(key)}" if key else "nothing pending", highlight=False)
    return 0


def _sync_first(campaign, console: Console) -> None:
    """Before an ingest, when a labeling tool is in use: push what is missing, pull the answers."""
    from seals_al.labeltools.loop import sync_before_ingest

    for line in sync_before_ingest(campaign):
        console.print(line, highlight=False)


def _report(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.report import check_report_folder, round_report, write_round_report

    out = Path(args.out)
    check_report_folder(out)  # before any work: a folder that holds anything else is refused
    result = round_report(Campaign(args.campaign, progress=False), args.target_metric, args.target_value)
    write_round_report(result, out)
    console.print(f"round {result.round}: {result.reason}\nreport: {out / 'report.html'}", highlight=False)
    return 0


def _init(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import CampaignConfig, init
    from seals_al.labeltools.registry import check_tool_name

    config = CampaignConfig.from_yaml(args.config)
    check_tool_name(config.label_tool, args.config)
    storage = init(config, args.campaign)
    console.print(
        f"campaign created at {storage.uri}; run `seals-al round {args.campaign}` for the first batch"
    )
    return 0


def _refresh(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.campaign.refresh import refresh_data

    done = refresh_data(Campaign(args.campaign), beam_args=args.beam_args)
    console.print("\n".join(done.lines()), highlight=False)
    return 0


def _round(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign

    campaign = Campaign(args.campaign)
    _sync_first(campaign, console)
    metrics = campaign.round()
    if metrics is None:
        console.print(f"nothing new: waiting for {campaign.status()['waiting_for']}", highlight=False)
        return 0
    r = metrics["round"]
    shown = {k: v for k, v in metrics.items() if k not in ("round",)}
    console.print(
        f"round {r} committed: "
        + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()),
        highlight=False,
    )
    for line in campaign.intake(r):
        console.print(f"  {line}", highlight=False)
    keys = campaign.keys(r)
    console.print(
        f"batch: {campaign.storage.where(keys.to_label)} (Label Studio tasks: {keys.label_studio})\n"
        f"drop labels in: {campaign.storage.where(keys.inbox)}/ or run `seals-al label`",
        highlight=False,
    )
    from seals_al.labeltools.base import LabelToolError
    from seals_al.labeltools.loop import push_if_configured

    try:
        pushed = push_if_configured(campaign)
    except LabelToolError as e:
        raise SealsError(
            f"round {r} is committed, but its batch was not pushed: {e}; run `seals-al label-tool push`"
        ) from e
    if pushed is not None:
        console.print(pushed.summary(), highlight=False)
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from seals_al.campaign import Campaign

    status = Campaign(args.campaign, progress=False).status()
    table = Table(show_header=False, title=f"campaign {status['concept']!r}")
    for key, value in status.items():
        if isinstance(value, list):
            value = "\n".join(value) or None
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    console.print(table)
    return 0


def _unlock(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign.lease import break_lease
    from seals_al.storage import open_storage

    held = break_lease(open_storage(args.campaign))
    if held is None:
        console.print(f"{args.campaign}: no lease is held", highlight=False)
    else:
        console.print(
            f"{args.campaign}: broke the lease of {held}; if that stage is still running it commits nothing",
            highlight=False,
        )
    return 0
