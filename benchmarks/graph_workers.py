"""The neighbour graph built by Beam workers (seals_al.index.graph_pipeline) against the
one-process build, side by side in one run: wall time, the peak RSS of every process (the driver
and each worker), per-worker throughput, and whether the graphs are equal row for row.

Data: the cluster benchmark's synthetic clustered unit vectors (benchmarks/round_cost.make_data;
reused when --work holds them) and an IVF index over every row (as benchmarks/cluster_path builds
it). Each way runs in a fresh process: the one-process build with faiss's own threads (2 here),
then Beam's FnApiRunner in multi-processing mode with 1 and with 2 workers of one faiss thread
each (OMP_NUM_THREADS=1), every worker opening the index and reading its rows of the store itself.

    python benchmarks/graph_workers.py                        # 1M x 128, k 100
    python benchmarks/graph_workers.py --rows 10000000 --work /tmp/seals-cluster-path
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, publish, reproducing_command, write_json
from _processes import measure_processes, plot_ways

WAYS = {
    "one process, faiss threads": [],
    "Beam, 1 worker": ["--direct_num_workers=1", "--direct_running_mode=multi_processing"],
    "Beam, 2 workers": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}
GRAPH_FILES = ("row_ids.npy", "neighbours.npy", "similarities.npy")


def build(way: str, index: str, store: str, k: int, out: Path) -> None:
    """One way, in this (fresh) process."""
    from seals_al.index.directory import open_index_dir
    from seals_al.index.graph import build_neighbour_graph
    from seals_al.index.graph_pipeline import graph_with_beam
    from seals_al.store import EmbeddingStore

    rows = np.sort(EmbeddingStore.open(store).row_ids)
    if not WAYS[way]:
        build_neighbour_graph(open_index_dir(index), EmbeddingStore.open(store), rows, k, out, progress=False)
        return
    work = out.parent / f"{out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    graph_with_beam(index, store, rows, k, out, str(work), beam_args=WAYS[way], progress=False)
    for part in work.iterdir():
        part.unlink()
    work.rmdir()


def measure(way: str, index: str, store: str, k: int, out: Path) -> dict:
    """A way in a fresh process (:func:`_processes.measure_processes`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if WAYS[way] else dict(os.environ)
    args = [sys.executable, __file__, "--run", way, "--index", index, "--store", store, "--k", str(k)]
    return measure_processes([*args, "--out", str(out)], env, way)


def equal_graphs(a: Path, b: Path, chunk: int = 1_000_000) -> bool:
    for name in GRAPH_FILES:
        x, y = np.load(a / name, mmap_mode="r"), np.load(b / name, mmap_mode="r")
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if any(not np.array_equal(x[s : s + chunk], y[s : s + chunk]) for s in range(0, len(x), chunk)):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seals-graph-workers"))
    parser.add_argument("--run", choices=list(WAYS), help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        build(args.run, args.index, args.store, args.k, args.out)
        return 0

    import cluster_path
    import round_cost

    from seals_al.index.directory import publish_index_dir
    from seals_al.store import EmbeddingStore

    folder = args.work / "data" / f"n{args.rows}-d{args.dim}"
    _, store = round_cost.make_data(args.rows, args.dim, 0, folder / "data")
    factory = cluster_path.factory(args.rows, args.dim)
    index = folder / f"index-{factory.replace(',', '-')}"
    started = time.perf_counter()
    if not (index / "manifest.json").is_file():
        publish_index_dir(
            EmbeddingStore.open(store), str(index), factory, search_params={"nprobe": 16}, recall_queries=0
        )
    index_seconds = time.perf_counter() - started
    result = {"rows": args.rows, "dim": args.dim, "k": args.k, "factory": factory, "ways": {}}
    outs = {}
    for way in WAYS:
        outs[way] = args.work / "graphs" / way.replace(" ", "-").replace(",", "")
        print(f"{way}: building", flush=True)
        result["ways"][way] = measure(way, str(index), str(store), args.k, outs[way])
        print(f"{way}: {json.dumps(result['ways'][way])}", flush=True)
    reference = outs["one process, faiss threads"]
    for way in WAYS:
        result["ways"][way]["equal_to_one_process"] = equal_graphs(reference, outs[way])
    one, two = result["ways"]["Beam, 1 worker"], result["ways"]["Beam, 2 workers"]
    result["two_over_one_worker"] = two["seconds"] / one["seconds"]
    write_json(DOCS / "benchmarks" / "graph_workers.json", result)
    title = f"neighbour graph of {result['rows']:,} x {result['dim']} rows, k {result['k']}"
    plot_ways(result["ways"], DOCS / "benchmarks" / "graph_workers.png", title)
    command = reproducing_command("graph_workers.py", parser, args, "rows", "dim", "k", "work")
    lines = [
        "## The neighbour graph on Beam workers",
        "",
        f"`{command}`: {args.rows:,} rows x {args.dim} (the cluster benchmark's synthetic data), "
        f"k {args.k}, index `{factory}` over every row (nprobe 16; "
        + (f"built in {index_seconds:.0f} s" if index_seconds > 1 else "built by an earlier run")
        + "). Each way in a fresh process on this machine (2 cores); the Beam ways on the "
        "FnApiRunner in multi-processing mode, one faiss thread a worker, each worker opening the "
        "index and reading its rows of the store itself. Peak RSS: each process's VmHWM.",
        "",
        "| way | wall s | rows/s per worker | driver peak RSS MB | workers' peak RSS MB "
        "| equal to one process |",
        "|---|---|---|---|---|---|",
    ]
    for way, r in result["ways"].items():
        workers = len(r["worker_peak_rss_mb"]) or 1
        per = args.rows / r["seconds"] / workers
        shown = ", ".join(f"{mb:,.0f}" for mb in r["worker_peak_rss_mb"]) or "-"
        lines.append(
            f"| {way} | {r['seconds']:.1f} | {per:,.0f} | {r['driver_peak_rss_mb']:,.0f} | {shown} | "
            f"{'yes' if r['equal_to_one_process'] else '**no**'} |"
        )
    lines += [
        "",
        f"Two workers took {result['two_over_one_worker']:.2f}x the time of one (goal: at most 0.65x). "
        "The one-process build reads the store through a memory map, whose pages count in its RSS "
        f"(the store is {args.rows * args.dim * 4 / 2**20:,.0f} MB); the workers read their rows "
        "with positioned reads, and the driver only writes the lists it is handed.",
        "",
        "![graph workers](benchmarks/graph_workers.png)",
    ]
    publish("graph-workers", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
