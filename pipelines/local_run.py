"""`seals-al run-local`: run the simulation pipeline through kfp.local (SubprocessRunner), print
each round's metrics and where its artifacts are. What `make demo` runs.

A plugin command (entry point group ``seals_al.commands``), so the core never imports kfp.
"""

import argparse
import json
import time
from pathlib import Path


def run_simulation(
    items_uri: str,
    out: str | Path,
    concept: str,
    *,
    rounds: int,
    batch_size: int = 100,
    budget: int = 100_000,
    strategy: str = "maxent",
    index_factory: str = "Flat",
) -> dict:
    """Run the simulation pipeline locally; returns {"seconds", "campaign", "pipeline_root"}."""
    from kfp import local

    from pipelines.simulation import make_simulation

    out = Path(out).resolve()
    root = out / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    started = time.perf_counter()
    make_simulation(rounds)(
        items_uri=str(Path(items_uri).resolve()),
        campaign_uri=str(out / "campaigns" / concept),
        embeddings_uri=str(out / "embeddings"),
        index_uri=str(out / "index"),
        concept=concept,
        strategy=strategy,
        batch_size=batch_size,
        budget=budget,
        index_factory=index_factory,
    )
    return {
        "seconds": time.perf_counter() - started,
        "campaign": str(out / "campaigns" / concept),
        "pipeline_root": str(root),
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run-local",
        help="run the simulation pipeline in kfp.local and show each round's metrics and artifacts",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--items", required=True, help="items with id, text, label and split columns")
    p.add_argument("--concept", required=True)
    p.add_argument("--rounds", type=int, default=5, help="max_rounds, unrolled at compile time")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--strategy", default="maxent", choices=["maxent", "id", "mlp", "random"])
    p.add_argument("--out", required=True, help="folder for the store, index, campaign and run")
    p.set_defaults(handler=_run_local)


def _run_local(args: argparse.Namespace, console) -> int:
    from rich.table import Table

    from seals_al.campaign import Campaign

    result = run_simulation(
        args.items,
        args.out,
        args.concept,
        rounds=args.rounds,
        batch_size=args.batch_size,
        budget=args.budget,
        strategy=args.strategy,
    )
    campaign = Campaign(result["campaign"], progress=False)
    table = Table(title=f"simulation pipeline (kfp.local): {args.concept!r}, {args.strategy}")
    columns = ("labeled", "positives", "recall", "average_precision", "pool_size", "pool_fraction")
    for name in ("round", *columns):
        table.add_column(name, justify="right")
    for r in campaign.committed_rounds():
        m = campaign.storage.read_json(f"rounds/{r:03d}/metrics.json")
        table.add_row(str(r), *(f"{m[c]:.3f}" if isinstance(m[c], float) else f"{m[c]:,}" for c in columns))
    console.print(table)
    run = sorted(Path(result["pipeline_root"]).iterdir())[-1]
    console.print(f"pipeline run: {run} ({result['seconds']:.0f} s)", highlight=False)
    for task in sorted(run.glob("report*"), key=lambda p: (len(p.name), p.name)):
        output = json.loads((task / "executor_output.json").read_text())
        uris = {name: a["artifacts"][0]["uri"] for name, a in output["artifacts"].items()}
        console.print(
            f"  {task.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(uris.items())), highlight=False
        )
    console.print(
        f"campaign (readable outside KFP: seals-al status {result['campaign']}): {result['campaign']}"
    )
    return 0
