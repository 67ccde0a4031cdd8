"""Simulated campaigns and their comparison: ``seals-al simulate`` and ``seals-al compare``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.live import Live

from seals_al.errors import SealsError
from seals_al.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_FACTORY,
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_RAM_BUDGET_MB,
    DEFAULT_STRATEGY,
    MODES,
    SEED_NEGATIVES,
    SEED_POSITIVES,
    SIMULATION_SPLIT_COLUMN,
    SIMULATION_TRUTH_COLUMN,
    STRATEGIES,
    DataConfig,
    flat_names,
    from_flat,
)

T = TypeVar("T")


def add_simulate(sub: argparse._SubParsersAction) -> None:
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


def add_compare(sub: argparse._SubParsersAction) -> None:
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
