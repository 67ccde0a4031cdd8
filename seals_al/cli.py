"""The ``seals-al`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.live import Live

from seals_al.errors import EXIT_USAGE, SealsError
from seals_al.labelstudio import ENV_KEY, ENV_URL
from seals_al.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_FACTORY,
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_NPROBE,
    DEFAULT_RAM_BUDGET_MB,
    DEFAULT_STRATEGY,
    EXPORT_PRECISIONS,
    LAYOUTS,
    MODES,
    SEED_NEGATIVES,
    SEED_POSITIVES,
    SIMULATION_SPLIT_COLUMN,
    SIMULATION_TRUTH_COLUMN,
    STRATEGIES,
    WAIT_POLL_SECONDS,
    WAIT_TIMEOUT_SECONDS,
    DataConfig,
    flat_names,
    from_flat,
)
from seals_al.version import __version__

T = TypeVar("T")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a campaign with an oracle labeler (benchmarks, demos)",
        description="Simulate a SEALS campaign on a labeled CSV: an oracle answers from the truth column.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="items: .csv, .jsonl or .parquet")
    p.add_argument("--concept", required=True, help="the truth value that is the positive class")
    p.add_argument("--text-column", default="text")
    p.add_argument("--truth-column", "--label-column", default=SIMULATION_TRUTH_COLUMN, help="ground truth")
    p.add_argument("--id-column", default="id")
    p.add_argument("--split-column", default=SIMULATION_SPLIT_COLUMN)
    p.add_argument("--eval-split", default=DEFAULT_EVAL_SPLIT, help="split used for AP; never selectable")
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES)
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    p.add_argument("--seed-positives", type=int, default=SEED_POSITIVES)
    p.add_argument("--seed-negatives", type=int, default=SEED_NEGATIVES)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--rounds", type=int, default=9, help="selection rounds after the seed round")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="neighbours per kNN query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--embeddings", help="precomputed embeddings: a store dir, .npy (item order) or .parquet")
    p.add_argument("--embeddings-column", default="embedding", help="vector column of a .parquet")
    p.add_argument("--index-factory", default=DEFAULT_FACTORY, help="faiss index_factory string")
    p.add_argument(
        "--no-knn-graph",
        dest="knn_graph",
        action="store_false",
        help="query the index at every pick instead of precomputing the neighbour lists of U once",
    )
    p.add_argument("--cache-dir", help="embedding cache (default $SEALS_CACHE_DIR or ~/.cache/seals-al)")
    p.add_argument(
        "--ram-budget-mb",
        type=int,
        default=DEFAULT_RAM_BUDGET_MB,
        help="read the embeddings and neighbour lists into RAM when the embeddings take at most this "
        "many MB; above it (or with 0) they are memory-mapped and read as rounds touch them",
    )
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace, console: Console) -> int:
    from seals_al.dataset import Dataset
    from seals_al.items import Items
    from seals_al.report import add_round_row, plot_runs, round_table
    from seals_al.simulate import SimulationConfig, check_out_dir, check_simulation, simulate

    for name in ("seed_positives", "seed_negatives", "batch_size", "k"):
        if getattr(args, name) < 1:
            raise SealsError(f"--{name.replace('_', '-')} must be at least 1")
    if args.rounds < 0:
        raise SealsError("--rounds must be 0 or more")
    if args.ram_budget_mb < 0:
        raise SealsError("--ram-budget-mb must be 0 or more")
    data = _settings(DataConfig, args)
    sim = _settings(SimulationConfig, args)
    items = Items.load(data)
    check_simulation(items, sim, data)  # fail before the expensive part
    check_out_dir(args.out)
    # Many rounds in this process: mapped, so the rows rounds touch stay in after the first read.
    dataset = Dataset.prepare(data, items, access="mapped", ram_budget_mb=args.ram_budget_mb)
    dataset.check_factory()  # before anything is written, also when the data was prepared before
    table = round_table(f"{sim.concept}: {sim.learning.strategy} / {sim.learning.mode}")
    with Live(table, console=console, auto_refresh=False) as live:
        summary = simulate(
            dataset, sim, args.out, on_round=lambda r: (add_round_row(table, r), live.refresh())
        )
    out = Path(args.out)
    plot_runs([summary], out / "plot.png")
    if summary["stopped"]:
        console.print(f"stopped early: {summary['stopped']}")
    console.print(
        f"\nsummary: {out / 'summary.json'}\nplot:    {out / 'plot.png'}\nrounds:  {out / 'rounds'}/"
    )
    return 0


def _settings(cls: type[T], args: argparse.Namespace) -> T:
    """A settings object from the flags of the same names (a flag is a setting's name, dashed)."""
    names = flat_names(cls)
    return from_flat(
        cls, {n: getattr(args, n) for n in names if hasattr(args, n)}, f"seals-al {args.command}"
    )


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="plot several simulation runs side by side")
    p.add_argument("runs", nargs="+", help="simulation output directories")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace, console: Console) -> int:
    from seals_al.report import load_summary, plot_runs

    summaries = []
    for run in args.runs:
        if not (Path(run) / "summary.json").is_file():
            raise SealsError(f"{run}: no summary.json (not a simulation output directory)")
        summaries.append(load_summary(run))
    console.print(f"plot: {plot_runs(summaries, args.out)}")
    return 0


def _add_campaign_commands(sub: argparse._SubParsersAction) -> None:
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
    p = sub.add_parser("label", help="label the open batch in the terminal (y / n / skip / undo / quit)")
    p.add_argument("campaign")
    p.set_defaults(handler=_label)
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
        "wait",
        help="wait until labels arrive: in the open round's inbox or, with Label Studio configured, "
        "as annotations of the batch's tasks (exit 2 on timeout)",
    )
    p.add_argument("campaign")
    p.add_argument("--poll-seconds", type=float, default=WAIT_POLL_SECONDS)
    p.add_argument("--timeout-seconds", type=float, default=WAIT_TIMEOUT_SECONDS)
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="Label Studio: end the wait once this fraction of the batch's tasks is annotated",
    )
    p.set_defaults(handler=_wait)
    ls = sub.add_parser(
        "labelstudio",
        help="push the open batch to Label Studio, or pull its annotations into the inbox",
        description=f"Label Studio at ${ENV_URL} (or the campaign's label_studio_url), with the API "
        f"token in ${ENV_KEY}.",
    )
    actions = ls.add_subparsers(dest="action", required=True)
    for action, text in (
        ("push", "create the project on first use and import the open batch's tasks (idempotent)"),
        ("pull", "export the batch's annotations into the inbox (idempotent); then `seals-al round`"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("campaign")
        p.add_argument(
            "--if-configured",
            action="store_true",
            help="exit 0 with a note when no Label Studio is configured (pipelines, scripts)",
        )
        p.set_defaults(handler=_labelstudio)
    p = sub.add_parser(
        "report", help="the last round's report (HTML, Markdown, metrics) and whether to keep going"
    )
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="folder for report.html, summary.md, metrics.json")
    p.add_argument("--target-metric", default="", help="stop once this metric reaches --target-value")
    p.add_argument("--target-value", type=float, default=1.0)
    p.set_defaults(handler=_report)
    p = sub.add_parser(
        "labeled",
        help="write the labeled set with who gave each label, when and from which file or tool",
    )
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="the file to write (.csv or .jsonl; local or gs://)")
    p.set_defaults(handler=_labeled)
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


def _labeled(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labels import check_labeled_set_name, is_labeled_set, labeled_set_file
    from seals_al.storage import check_output_file, open_storage, split_uri

    check_labeled_set_name(args.out)
    campaign = Campaign(args.campaign, progress=False)
    where = check_output_file(args.out, campaign.storage.uri, "labeled set", is_labeled_set)
    labeled = campaign.state().labeled
    data = labeled_set_file(labeled.values(), args.out)
    parent, name = split_uri(args.out)
    open_storage(parent).write_bytes(name, data)
    console.print(f"{len(labeled):,} labeled item(s): {where}", highlight=False)
    return 0


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
            from seals_al.storage import write_text_atomic

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
        from seals_al.oracle import label_open_batch

        key = label_open_batch(campaign)
        console.print(f"labels: {campaign.storage.where(key)}" if key else "nothing pending", highlight=False)
    return 0


def _wait(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labelstudio import wait_for_labels

    campaign = Campaign(args.campaign)
    files = wait_for_labels(campaign, args.poll_seconds, args.timeout_seconds, args.fraction)
    console.print(f"new label file(s): {', '.join(files)}", highlight=False)
    return 0


def _labelstudio(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labelstudio import Sync

    campaign = Campaign(args.campaign, progress=False)
    sync = Sync.of(campaign)
    if sync is None:
        message = f"no Label Studio configured: set {ENV_URL} (or label_studio_url) and {ENV_KEY}"
        if not args.if_configured:
            raise SealsError(message)
        console.print(f"{message}; nothing to {args.action}", highlight=False)
        return 0
    done = sync.push() if args.action == "push" else sync.pull()
    console.print(done.summary(), highlight=False)
    return 0


def _sync_first(campaign, console: Console) -> None:
    """Before an ingest, when Label Studio is in use: push what is missing, pull the annotations."""
    from seals_al.labelstudio import sync_before_ingest

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

    storage = init(CampaignConfig.from_yaml(args.config), args.campaign)
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
    from seals_al.labelstudio import LabelStudioError, push_if_configured

    try:
        pushed = push_if_configured(campaign)
    except LabelStudioError as e:
        raise SealsError(
            f"round {r} is committed, but its batch was not pushed: {e}; run `seals-al labelstudio push`"
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


def _label(args: argparse.Namespace, console: Console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.labeler import run_labeler

    run_labeler(Campaign(args.campaign, progress=False), console)
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed items with the Apache Beam pipeline into an embeddings store",
        description="Runs seals_al.embed_pipeline: --input GLOB --output STORE [--id_column id] "
        "[--text_column text] [--shard_rows N] [--work_dir DIR] and any Beam option (--runner, "
        "--direct_num_workers, Dataflow/Flink/Spark flags). Unknown options are an error.",
    )
    p.set_defaults(handler=_embed)


def _embed(args: argparse.Namespace, console: Console) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from seals_al.embed.pipeline import EmbedOptions, run

    manifest = run(args.beam_args)
    extra = manifest.get("extra", {})
    output = PipelineOptions(args.beam_args).view_as(EmbedOptions).output
    console.print(
        f"{extra.get('embedded', 0):,} embedded, {extra.get('dead_letter', 0):,} dead-lettered "
        f"(see dead_letter.jsonl): {output}",
        highlight=False,
    )
    return 0


def _add_build_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-index",
        help="build a faiss index over an embeddings store, with measured recall",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Beam options after the known ones (e.g. --runner=DataflowRunner --project=... or "
        "--direct_num_workers=2 --direct_running_mode=multi_processing) train and fill an IVF index "
        "on Beam workers, which read the store where it is published, and run the graph's queries "
        "(--graph-k) on them; without any, both run in this process.",
    )
    p.add_argument("store", help="an embeddings store (a folder or gs://bucket/prefix)")
    p.add_argument("out", help="the index folder to publish (a folder or gs://bucket/prefix)")
    p.add_argument(
        "--factory", default=DEFAULT_FACTORY, help="faiss index_factory string, e.g. IVF4096,PQ32 or HNSW32"
    )
    p.add_argument("--layout", default="single", choices=LAYOUTS)
    p.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per shard (ondisk, shards)")
    p.add_argument("--train-size", type=int, default=100_000, help="rows sampled to train IVF/PQ")
    p.add_argument("--nprobe", type=int, help=f"IVF lists probed per query (default {DEFAULT_NPROBE})")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth")
    p.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@k (0: skip)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="the k of recall@k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--graph-k",
        type=int,
        help="also build the neighbour graph of every row for this k (a campaign's k), its queries "
        "on Beam workers (in this process without Beam options), where a round over this index "
        "finds it: under a gs:// index's graphs/, or this machine's cache",
    )
    p.set_defaults(handler=_build_index)


def _build_index(args: argparse.Namespace, console: Console) -> int:
    from seals_al.index.directory import INDEX_FORMAT, publish_index_dir
    from seals_al.published import check_target, materialize
    from seals_al.store import EmbeddingStore

    for name in ("shard_rows", "train_size", "k"):
        if getattr(args, name) < 1:
            raise SealsError(f"--{name.replace('_', '-')} must be at least 1")
    if args.graph_k is not None and args.graph_k < 1:
        raise SealsError("--graph-k must be at least 1")
    beam_args = args.beam_args or None  # with any, the index is trained and filled on Beam workers
    if beam_args:  # checked before the index is built: a typo fails now, not after it
        from seals_al.beam_options import beam_options

        beam_options(beam_args)
    params = {k: v for k, v in (("nprobe", args.nprobe), ("efSearch", args.ef_search)) if v is not None}
    check_target(args.out, INDEX_FORMAT)  # before the store is fetched
    if beam_args:  # the workers read the store where it is published; this process, its row ids
        store = EmbeddingStore.published(args.store)  # a factory they cannot fill: refused before work
    else:
        store = EmbeddingStore.open(materialize(args.store, "an embeddings store"))
    manifest = publish_index_dir(
        store,
        args.out,
        args.factory,
        layout=args.layout,
        shard_rows=args.shard_rows,
        train_size=args.train_size,
        search_params=params,
        recall_queries=args.recall_queries,
        k=args.k,
        seed=args.seed,
        beam_args=beam_args,
    )
    recall = manifest.get("recall")
    console.print(
        f"{manifest['factory']} ({manifest['layout']}) over {manifest['ntotal']:,} vectors in "
        f"{manifest['build_seconds']:.1f} s"
        + (
            f"; recall@{recall['k']} {recall['recall_at_k']:.4f} on {recall['queries']} queries, "
            f"{recall['query_ms']:.3f} ms/query"
            if recall
            else ""
        )
        + f"\npublished: {args.out}",
        highlight=False,
    )
    if args.graph_k is not None:
        from seals_al.index.graph_pipeline import publish_graph

        graph = publish_graph(args.out, args.store, args.graph_k, beam_args=args.beam_args)
        console.print(f"neighbour graph k={args.graph_k}: {graph}", highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seals-al", description=__doc__)
    parser.add_argument("--version", action="version", version=f"seals-al {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_compare(sub)
    _add_campaign_commands(sub)
    _add_build_index(sub)
    _add_embed(sub)
    for plugin in entry_points(group="seals_al.commands"):  # e.g. `compile`, from pipelines/
        plugin.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Only `embed`, `score`, `refresh` and `build-index` take options they do not declare: they are
    # Beam's, and the pipeline rejects any that no Beam options class knows. Every other command
    # parses strictly.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("embed", "score", "refresh", "build-index"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    console = Console(soft_wrap=True)  # a long path or URL stays on one line, whole
    try:
        return args.handler(args, console)
    except SealsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
