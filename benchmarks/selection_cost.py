"""Selection cost per round, SEALS vs global, measured side by side in one process.

Data: synthetic clustered unit vectors, 1,000 clusters, one rare positive cluster (0.5% of rows),
at each size in --sizes, 384-d, stored in the embeddings format and memory-mapped. Index: faiss
IVF (nlist ~ 4 sqrt(n), nprobe 16). Both modes get the same seed set (5 positives + 95 negatives),
the same oracle and the same classifier each round; only selection differs. Timed: the selection
call alone (model scoring, kNN queries, pool upkeep, top-b). Memory: peak Python/numpy allocation
(tracemalloc) during one extra selection per mode, plus the embedding bytes each mode reads.

Writes docs/benchmarks/selection_cost.json and .png and its section of docs/BENCHMARKS.md.

    python benchmarks/selection_cost.py                     # 100k and 1M (about 10 minutes)
    python benchmarks/selection_cost.py --sizes 20000       # a quick look
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, update_section, write_json

from seals_al.embeddings import EmbeddingStore, write_store
from seals_al.index import build_index, set_search_parameters
from seals_al.pool import CandidatePool
from seals_al.selection import select_global, select_seals
from seals_al.strategies import get_strategy
from seals_al.train import fit_logistic

CLUSTERS = 1000
RARE = 0.005


def make_data(n: int, dim: int, seed: int, out: Path) -> tuple[EmbeddingStore, np.ndarray]:
    """Clustered unit vectors; cluster 0 is the rare positive concept."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rare = int(n * RARE)
    cluster = np.concatenate([np.zeros(rare, np.int32), rng.integers(1, CLUSTERS, n - rare).astype(np.int32)])
    rng.shuffle(cluster)
    vectors = np.empty((n, dim), np.float32)
    for start in tqdm(range(0, n, 100_000), desc=f"data {n:,}", unit="block"):
        c = cluster[start : start + 100_000]
        block = centres[c] + rng.normal(scale=0.04, size=(len(c), dim)).astype(np.float32)
        vectors[start : start + len(c)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    store = write_store(
        out / f"store-{n}", [str(i) for i in range(n)], vectors, model="synthetic", normalized=True
    )
    del vectors
    return store, (cluster == 0).astype(np.int8)


def run_mode(mode: str, store, index, truth, strategy, rounds: int, b: int, k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = store.row_ids
    labeled = [
        *rng.choice(rows[truth == 1], 5, replace=False),
        *rng.choice(rows[truth == 0], 95, replace=False),
    ]
    labeled = [int(r) for r in labeled]
    n = len(rows)
    pool, selectable = None, None
    setup = time.perf_counter()
    if mode == "seals":
        pool = CandidatePool(index, store, k)
        pool.expand(labeled)
    else:
        selectable = np.ones(n, bool)
        selectable[store.positions(np.asarray(labeled))] = False
    setup = time.perf_counter() - setup
    records = []

    def select(model, r):
        if pool is not None:
            return select_seals(pool, model, strategy, b, seed=seed, round_index=r)
        return select_global(store, selectable, model, strategy, b, seed=seed, round_index=r)

    for r in range(rounds + 1):
        x = store.vectors(np.asarray(labeled))
        model = fit_logistic(x, truth[store.positions(np.asarray(labeled))], seed=seed)
        if r == rounds:  # untimed: peak allocations of one more selection
            tracemalloc.start()
            select(model, r)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            break
        started = time.perf_counter()
        selection = select(model, r)
        seconds = time.perf_counter() - started
        picked = [p.row_id for p in selection.picks]
        labeled += picked
        if selectable is not None:
            selectable[store.positions(np.asarray(picked))] = False
        records.append(
            {
                "round": r,
                "labeled_before": len(labeled) - len(picked),
                "scored": selection.scored,
                "scored_fraction": selection.scored / n,
                "pool_fraction": (len(pool) if pool is not None else int(selectable.sum())) / n,
                "seconds": seconds,
                "positives_found": int(truth[store.positions(np.asarray(labeled))].sum()),
            }
        )
    return {
        "setup_seconds": setup,
        "rounds": records,
        "peak_alloc_mb": peak / 2**20,
        "knn_queries": pool.queries if pool is not None else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--strategies", nargs="+", default=["maxent", "mlp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the synthetic stores go (default: a temp dir)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    results = {"config": vars(args), "machine": _machine(), "sizes": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            store, truth = make_data(n, args.dim, args.seed, Path(tmp))
            nlist = 1 << round(math.log2(4 * math.sqrt(n)))
            started = time.perf_counter()
            index = build_index(
                store, store.row_ids, f"IVF{nlist},Flat", train_size=40 * nlist, seed=args.seed
            )
            set_search_parameters(index, nprobe=args.nprobe)
            build = time.perf_counter() - started
            entry = {
                "index": f"IVF{nlist},Flat nprobe={args.nprobe}",
                "index_build_seconds": build,
                "runs": {},
            }
            for name in args.strategies:
                strategy = get_strategy(name)
                for mode in ("seals", "global"):
                    run = run_mode(
                        mode, store, index, truth, strategy, args.rounds, args.batch_size, args.k, args.seed
                    )
                    entry["runs"][f"{name}/{mode}"] = run
                    last = run["rounds"][-1]
                    print(
                        f"n={n:,} {name}/{mode}: last round {last['seconds'] * 1e3:.1f} ms, "
                        f"scored {last['scored_fraction']:.2%} of U, peak alloc {run['peak_alloc_mb']:.0f} MB"
                    )
            results["sizes"][str(n)] = entry
            del index, store
    write_json(DOCS / "benchmarks" / "selection_cost.json", results)
    _plot(results, DOCS / "benchmarks" / "selection_cost.png")
    update_section("selection_cost", _markdown(results, argv))
    return 0


def _machine() -> str:
    return f"{platform.machine()}, {faiss.omp_get_max_threads()} threads, Python {platform.python_version()}"


def _mean_seconds(run: dict) -> float:
    return float(np.mean([r["seconds"] for r in run["rounds"]]))


def _markdown(results: dict, argv: list[str] | None) -> str:
    cmd = "python benchmarks/selection_cost.py" + (" " + " ".join(argv) if argv else "")
    cfg = results["config"]
    lines = [
        "## Selection cost: SEALS vs global",
        "",
        f"Reproduce: `make benchmarks` or `{cmd}` ({results['machine']}).",
        "",
        f"Synthetic clustered unit vectors, {CLUSTERS:,} clusters, one positive cluster of {RARE:.1%}, "
        f"{cfg['dim']}-d, memory-mapped; seed 5 + 95, b = {cfg['batch_size']}, k = {cfg['k']}, "
        f"{cfg['rounds']} rounds (600 labels after the last). Time is the selection call alone; "
        "both modes ran in one process on the same data, index, seeds and classifier.",
        "",
        "| rows | index | strategy | seals ms/round | global ms/round | global / seals | "
        "seals scored % of U (last round) | seals pool % of U after 600 labels | "
        "peak alloc seals / global (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, entry in results["sizes"].items():
        for name in cfg["strategies"]:
            s, g = entry["runs"][f"{name}/seals"], entry["runs"][f"{name}/global"]
            ms_s, ms_g = 1e3 * _mean_seconds(s), 1e3 * _mean_seconds(g)
            lines.append(
                f"| {int(n):,} | {entry['index']} | {name} | {ms_s:.1f} | {ms_g:.1f} | {ms_g / ms_s:.1f}x | "
                f"{s['rounds'][-1]['scored_fraction']:.2%} | {s['rounds'][-1]['pool_fraction']:.2%} | "
                f"{s['peak_alloc_mb']:.0f} / {g['peak_alloc_mb']:.0f} |"
            )
    sizes = list(results["sizes"])
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        lines += ["", f"Growth of the mean round time from {int(lo):,} to {int(hi):,} rows:", ""]
        for name in cfg["strategies"]:
            for mode in ("seals", "global"):
                a = _mean_seconds(results["sizes"][lo]["runs"][f"{name}/{mode}"])
                b = _mean_seconds(results["sizes"][hi]["runs"][f"{name}/{mode}"])
                lines.append(f"- {name} / {mode}: {b / a:.1f}x")
    lines += [
        "",
        "Per-round detail (scored examples, time): `docs/benchmarks/selection_cost.json`; "
        "plot: `docs/benchmarks/selection_cost.png`. Peak alloc is numpy/Python heap during one "
        "selection (tracemalloc); global also streams every row of U from the memory map each round "
        f"({cfg['dim'] * 4} bytes a row), SEALS only the pool's rows.",
        "",
        "![selection cost](benchmarks/selection_cost.png)",
    ]
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(12, 4.2))
    for n, entry in results["sizes"].items():
        for key, run in entry["runs"].items():
            style = "--" if key.endswith("global") else "-"
            labels = [r["labeled_before"] for r in run["rounds"]]
            ax_t.plot(
                labels,
                [1e3 * r["seconds"] for r in run["rounds"]],
                style,
                marker="o",
                ms=3,
                label=f"{int(n):,} {key}",
            )
            ax_s.plot(
                labels,
                [100 * r["scored_fraction"] for r in run["rounds"]],
                style,
                marker="o",
                ms=3,
                label=f"{int(n):,} {key}",
            )
    ax_t.set(
        xlabel="labels before the round",
        ylabel="selection ms per round",
        yscale="log",
        title="Selection time",
    )
    ax_s.set(xlabel="labels before the round", ylabel="% of U scored", yscale="log", title="Examples scored")
    for ax in (ax_t, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
