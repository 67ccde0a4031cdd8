"""Label efficiency on CLINC150: SEALS vs global selection, 20 concepts (the design notes'
reference figures).

Concepts: ``random.Random(0).sample(sorted(set(labels) - {"oos"}), 20)``. Each campaign: seed
5 positives + 95 negatives, 9 rounds of b = 100 (1,000 labels), k = 100 exact neighbours,
logistic regression (balanced, C = 1) on all-MiniLM-L6-v2 embeddings, AP on the test split,
U = train + val including oos. Strategies maxent and mlp, random as a reference, and full
supervision (a model trained on every label of U) as the reference line.

Writes docs/benchmarks/label_efficiency.json and .png and its section of docs/BENCHMARKS.md.

    python benchmarks/label_efficiency.py            # about 10 minutes on 2 cores (first run embeds)
    python benchmarks/label_efficiency.py --concepts 3 --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, ROOT, update_section, write_json

from seals_al.dataset import Dataset
from seals_al.report import plot_runs
from seals_al.settings import SIMULATION_SPLIT_COLUMN, SIMULATION_TRUTH_COLUMN, DataConfig, RoundConfig
from seals_al.simulate import SimulationConfig, full_supervision_ap, simulate

DATA = ROOT / "data" / "clinc150" / "clinc150.csv"
FIELDS = ("labeled", "average_precision", "recall", "pool_fraction", "selection_seconds", "positives")


def mean_summary(summaries: list[dict]) -> dict:
    """Average the per-round records of several campaigns (same rounds) into one summary."""
    rounds = []
    for records in zip(*(s["rounds"] for s in summaries), strict=True):
        row = {"round": records[0]["round"]}
        for name in FIELDS:
            values = [r[name] for r in records if r.get(name) is not None]
            row[name] = float(np.mean(values)) if values else None
        rounds.append(row)
    return {"config": dict(summaries[0]["config"], concept="mean"), "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concepts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--strategies", nargs="+", default=["maxent", "mlp", "random"])
    parser.add_argument("--seed", type=int, default=0)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    config = DataConfig(
        data=str(DATA), truth_column=SIMULATION_TRUTH_COLUMN, split_column=SIMULATION_SPLIT_COLUMN
    )
    dataset = Dataset.prepare(config, access="mapped")
    labels = sorted(set(dataset.items().truth.tolist()) - {"oos"})
    concepts = random.Random(0).sample(labels, args.concepts)
    runs: dict[str, list[dict]] = {}
    full: dict[str, float] = {}
    started = time.perf_counter()
    jobs = [(c, s, m) for c in concepts for s in args.strategies for m in ("seals", "global")]
    for concept, strategy, mode in tqdm(jobs, desc="campaigns", unit="run"):
        learning = RoundConfig(strategy=strategy, mode=mode, seed=args.seed)
        sim = SimulationConfig(concept=concept, learning=learning, rounds=args.rounds)
        summary = simulate(dataset, sim, progress=False)
        runs.setdefault(f"{strategy}/{mode}", []).append(summary)
    for concept in tqdm(concepts, desc="full supervision", unit="concept"):
        full[concept] = full_supervision_ap(dataset, concept)
    elapsed = time.perf_counter() - started

    means = {key: mean_summary(summaries) for key, summaries in runs.items()}
    results = {
        "config": vars(args),
        "concepts": concepts,
        "u_size": len(dataset.u_rows),
        "eval_size": len(dataset.eval_rows),
        "full_supervision_ap": full,
        "mean": means,
        "per_concept": {
            key: {s["config"]["concept"]: s["rounds"] for s in summaries} for key, summaries in runs.items()
        },
        "seconds": elapsed,
    }
    write_json(DOCS / "benchmarks" / "label_efficiency.json", results)
    plot_runs(
        list(means.values()),
        DOCS / "benchmarks" / "label_efficiency.png",
        labels=list(means),
        reference={"full supervision": float(np.mean(list(full.values())))},
        title=f"CLINC150, mean of {len(concepts)} concepts",
    )
    update_section("label_efficiency", _markdown(results, argv))
    return 0


def _at(summary: dict, labeled: int, name: str) -> float | None:
    for r in summary["rounds"]:
        if round(r["labeled"]) == labeled:
            return r[name]
    return None


def _markdown(results: dict, argv: list[str] | None) -> str:
    cmd = "python benchmarks/label_efficiency.py" + (" " + " ".join(argv) if argv else "")
    means = results["mean"]
    full = float(np.mean(list(results["full_supervision_ap"].values())))
    strategies = results["config"]["strategies"]
    last = 100 + 100 * results["config"]["rounds"]
    checkpoints = [n for n in (600, last) if n <= last]
    lines = [
        "## Label efficiency on CLINC150: SEALS vs global",
        "",
        f"Reproduce: `make benchmarks` or `{cmd}` ({results['seconds'] / 60:.1f} min here).",
        "",
        f"{len(results['concepts'])} concepts ({', '.join(results['concepts'])}), "
        f"|U| = {results['u_size']:,} "
        f"(train + val incl. oos), AP on the {results['eval_size']:,}-row test split. Seed 5 + 95, b = 100, "
        "k = 100 (exact), logistic regression (balanced, C = 1), all-MiniLM-L6-v2. Means over concepts.",
        "",
        "| labels | strategy | AP seals | AP global | AP seals - global | recall seals | recall global "
        "| pool % of U (seals) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in checkpoints:
        for strategy in strategies:
            s, g = means[f"{strategy}/seals"], means[f"{strategy}/global"]
            ap_s, ap_g = _at(s, n, "average_precision"), _at(g, n, "average_precision")
            lines.append(
                f"| {n:,} | {strategy} | {ap_s:.3f} | {ap_g:.3f} | {ap_s - ap_g:+.3f} | "
                f"{_at(s, n, 'recall'):.3f} | {_at(g, n, 'recall'):.3f} | "
                f"{100 * _at(s, n, 'pool_fraction'):.1f}% |"
            )
    lines += [
        "",
        f"Full supervision (all {results['u_size']:,} labels of U): mean AP {full:.3f}.",
        "",
        "Reference figures of an independent implementation (the design notes), seals / global AP: "
        "600 labels maxent 0.954 / 0.954, mlp 0.952 / 0.953, random 0.850 / 0.832; 1,000 labels maxent "
        "0.955 / 0.955, mlp 0.953 / 0.953, random 0.866 / 0.852; full supervision 0.950; recall at 600: "
        "mlp ~0.99, maxent ~0.44, random ~0.08.",
        "",
        "On a set this small the pool covers much of U by 1,000 labels (expected; the pool advantage "
        "shows at scale, see the selection-cost section). Per-concept rounds: "
        "`docs/benchmarks/label_efficiency.json`.",
        "",
        "![label efficiency](benchmarks/label_efficiency.png)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
