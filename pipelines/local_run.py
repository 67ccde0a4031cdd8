"""`seals-al run-local`: run the simulation pipeline through kfp.local (SubprocessRunner), print
each round's metrics and where its artifacts are. What `make demo` runs.

A plugin command (entry point group ``seals_al.commands``), so the core never imports kfp.
"""

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from seals_al.settings import DEFAULT_BATCH_SIZE, DEFAULT_FACTORY, DEFAULT_STRATEGY, STRATEGIES


def run_simulation(
    items_uri: str,
    out: str | Path,
    concept: str,
    *,
    rounds: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    budget: int = 100_000,
    strategy: str = DEFAULT_STRATEGY,
    index_factory: str = DEFAULT_FACTORY,
    log: str | Path | None = None,
) -> dict:
    """Run the simulation pipeline locally; returns {"seconds", "campaign", "pipeline_root"}.

    With ``log``, kfp.local's verbose task output goes to that file and a progress bar counts
    the finished tasks instead.
    """
    from kfp import local

    from pipelines.simulation import make_simulation

    out = Path(out).resolve()
    root = out / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = make_simulation(rounds)
    arguments = dict(
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
    started = time.perf_counter()
    if log is None:
        pipeline(**arguments)
    else:
        # embed, build_index, init_campaign, then 4 tasks in round 0 and 5 in each later round.
        with _quiet(Path(log)) as terminal, _TaskProgress(root, 3 + 4 + 5 * (rounds - 1), terminal):
            pipeline(**arguments)
    return {
        "seconds": time.perf_counter() - started,
        "campaign": str(out / "campaigns" / concept),
        "pipeline_root": str(root),
    }


@contextlib.contextmanager
def _quiet(log: Path):
    """Send this process's stdout and stderr (and the task subprocesses') to ``log``; yields a
    stream on the real terminal."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    terminal = os.fdopen(os.dup(2), "w")
    try:
        with log.open("w") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        terminal.close()


class _TaskProgress:
    """A progress bar of finished pipeline tasks (their executor_output.json files)."""

    def __init__(self, root: Path, total: int, stream):
        self.root, self.total, self.stream = root, total, stream
        self._stop = threading.Event()

    def __enter__(self):
        self._seen = set(self.root.glob("*/*/executor_output.json"))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with tqdm(total=self.total, desc="pipeline tasks", unit="task", file=self.stream) as bar:
            while not self._stop.wait(0.5):
                done = set(self.root.glob("*/*/executor_output.json")) - self._seen
                bar.update(len(done) - bar.n)
                latest = max(done, key=lambda p: p.stat().st_mtime, default=None)
                if latest is not None:
                    bar.set_postfix_str(latest.parent.name)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run-local",
        help="run the simulation pipeline in kfp.local and show each round's metrics and artifacts",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--items", required=True, help="items with id, text, label and split columns")
    p.add_argument("--concept", required=True)
    p.add_argument("--rounds", type=int, default=5, help="max_rounds, unrolled at compile time")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES)
    p.add_argument("--out", required=True, help="folder for the store, index, campaign and run")
    p.set_defaults(handler=_run_local)


def _run_local(args: argparse.Namespace, console) -> int:
    from seals_al.campaign import Campaign
    from seals_al.report import add_round_row, round_table

    result = run_simulation(
        args.items,
        args.out,
        args.concept,
        rounds=args.rounds,
        batch_size=args.batch_size,
        budget=args.budget,
        strategy=args.strategy,
        log=Path(args.out) / "pipeline.log",
    )
    campaign = Campaign(result["campaign"], progress=False)
    table = round_table(f"simulation pipeline (kfp.local): {args.concept!r}, {args.strategy}")
    for r in campaign.committed_rounds():
        add_round_row(table, campaign.storage.read_json(campaign.keys(r).metrics))
    console.print(table)
    run = sorted(Path(result["pipeline_root"]).iterdir())[-1]
    print(f"pipeline run ({result['seconds']:.0f} s; task logs in {args.out}/pipeline.log):")
    print(f"  {run}")
    print("each round's artifacts there (Metrics, ClassificationMetrics, HTML, Markdown; the batch):")
    reports = sorted(run.glob("report*"), key=lambda p: (len(p.name), p.name))
    batches = sorted(run.glob("select-round*"), key=lambda p: (len(p.name), p.name))
    for r, (task, batch) in enumerate(zip(reports, batches, strict=True)):
        output = json.loads((task / "executor_output.json").read_text())
        print(f"  round {r}: {task.name}/{{{','.join(sorted(output['artifacts']))}}}  {batch.name}/batch")
    print(f"campaign state, readable outside KFP (`seals-al status {result['campaign']}`):")
    print(f"  {result['campaign']}/rounds/NNN/")
    return 0
