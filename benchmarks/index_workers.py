"""The index over U trained and filled by Beam workers (seals_al.index.build_pipeline) against
the one-process build, side by side in one run: wall time, the workers' share of it, the peak RSS
of every process (the driver and each worker), per-worker throughput, recall@100 of each index on
the same queries, and whether the index files are the same bytes.

Data: the cluster benchmark's synthetic clustered unit vectors (benchmarks/round_cost.make_data;
reused when --work holds them), and its index factory (benchmarks/cluster_path.factory). Each way
runs in a fresh process: the one-process build with faiss's own threads (2 here), then Beam's
FnApiRunner in multi-processing mode with 1 and with 2 workers of one faiss thread each
(OMP_NUM_THREADS=1), each worker reading its rows of the store itself.

    python benchmarks/index_workers.py                        # 1M x 128
    python benchmarks/index_workers.py --rows 10000000 --work /tmp/seals-cluster-path
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, publish, reproducing_command, write_json
from _processes import measure_processes, plot_ways

WAYS = {
    "one process, faiss threads": None,
    "Beam, 1 worker": ["--direct_num_workers=1", "--direct_running_mode=multi_processing"],
    "Beam, 2 workers": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}
NPROBE = 16


def build(way: str, store: str, factory: str, train_size: int, out: Path) -> None:
    """One way, in this (fresh) process."""
    from seals_al.folders import open_published
    from seals_al.index.directory import build_index_dir
    from seals_al.store import EmbeddingStore

    beam_args = WAYS[way]
    opened = EmbeddingStore.open(
        open_published(store, "an embeddings store"), access="rows" if beam_args else "mapped"
    )
    build_index_dir(
        opened, out, factory, train_size=train_size, search_params={"nprobe": NPROBE}, recall_queries=0,
        progress=False, beam_args=beam_args,
    )  # fmt: skip


def recalls(store: str, indexes: dict[str, Path], k: int, queries: int) -> dict[str, float]:
    """recall@k of each index against exact search, on the same sampled rows."""
    from seals_al.index.build import search
    from seals_al.index.directory import open_index_dir
    from seals_al.index.recall import exact_knn
    from seals_al.store import EmbeddingStore

    opened = EmbeddingStore.open(store)
    rows = np.sort(np.random.default_rng(1).choice(opened.row_ids, size=queries, replace=False))
    vectors = opened.vectors(rows)
    _, exact = exact_knn(opened, vectors, rows, k)
    found = {}
    for way, path in indexes.items():
        _, approx = search(open_index_dir(path), vectors, k, rows)
        hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True)]
        found[way] = float(np.mean(hits) / k)
    return found


def same_files(a: Path, b: Path) -> bool:
    manifest = json.loads((a / "manifest.json").read_text())
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in manifest["files"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000, help="rows sampled for recall@100")
    parser.add_argument("--work", type=Path, default=Path("/tmp/seals-index-workers"))
    parser.add_argument("--render", action="store_true", help="rewrite the docs from the last run")
    parser.add_argument("--run", choices=list(WAYS), help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--factory", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        build(args.run, args.store, args.factory, args.train_size, args.out)
        return 0

    if args.render:  # the docs again from the last run's figures (and its indexes' manifests)
        result = json.loads((DOCS / "benchmarks" / "index_workers.json").read_text())
        for way, measured in result["ways"].items():
            manifest = json.loads((_out(args.work, way) / "manifest.json").read_text())
            measured.update({key: manifest.get(key) for key in ("workers_seconds", "train_seconds")})
    else:
        result = measure(args)
    render(result, parser, args)
    return 0


def _out(work: Path, way: str) -> Path:
    return work / "indexes" / way.replace(" ", "-").replace(",", "")


def measure(args: argparse.Namespace) -> dict:
    """Each way in a fresh process, then recall and file equality of what they built."""
    import cluster_path
    import round_cost

    folder = args.work / "data" / f"n{args.rows}-d{args.dim}"
    _, store = round_cost.make_data(args.rows, args.dim, 0, folder / "data")
    factory = cluster_path.factory(args.rows, args.dim)
    result = {"rows": args.rows, "dim": args.dim, "factory": factory, "nprobe": NPROBE, "ways": {}}
    result |= {"train_size": args.train_size, "queries": args.queries}
    outs = {}
    for way, beam_args in WAYS.items():
        outs[way] = _out(args.work, way)
        shutil.rmtree(outs[way], ignore_errors=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if beam_args else dict(os.environ)
        command = [sys.executable, __file__, "--run", way, "--store", str(store), "--factory", factory]
        command += ["--train-size", str(args.train_size), "--out", str(outs[way])]
        print(f"{way}: building", flush=True)
        measured = measure_processes(command, env, way)
        manifest = json.loads((outs[way] / "manifest.json").read_text())
        measured["workers_seconds"] = manifest.get("workers_seconds")
        measured["train_seconds"] = manifest.get("train_seconds")
        measured["index_mb"] = sum((outs[way] / f).stat().st_size for f in manifest["files"]) / 2**20
        result["ways"][way] = measured
        print(f"{way}: {json.dumps(measured)}", flush=True)
    reference = outs["one process, faiss threads"]
    found = recalls(str(store), outs, 100, args.queries)
    for way in WAYS:
        result["ways"][way]["recall_at_100"] = found[way]
        result["ways"][way]["same_files_as_one_process"] = same_files(reference, outs[way])
    return result


def render(result: dict, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The JSON, the plot and the docs sections (this benchmark's and the scale plan)."""
    factory, rows, dim = result["factory"], result["rows"], result["dim"]
    result.setdefault("train_size", args.train_size)
    result.setdefault("queries", args.queries)
    one, two = result["ways"]["Beam, 1 worker"], result["ways"]["Beam, 2 workers"]
    result["two_over_one_worker"] = two["seconds"] / one["seconds"]
    result["two_over_one_worker_workers_only"] = two["workers_seconds"] / one["workers_seconds"]
    write_json(DOCS / "benchmarks" / "index_workers.json", result)
    title = f"index {factory} over {rows:,} x {dim} rows"
    plot_ways(result["ways"], DOCS / "benchmarks" / "index_workers.png", title)
    command = reproducing_command(
        "index_workers.py", parser, args, "rows", "dim", "train_size", "queries", "work"
    )
    lines = [
        "## The index on Beam workers",
        "",
        f"`{command}`: {rows:,} rows x {dim} (the cluster benchmark's synthetic data), "
        f"index `{factory}` over every row (nprobe {NPROBE}), trained on {result['train_size']:,} sampled "
        "rows. Each way in a fresh process on this machine (2 cores); the Beam ways on the "
        "FnApiRunner in multi-processing mode, one faiss thread a worker: the workers read the "
        "sample and train (one worker), then encode their ranges; the driver adds the codes into the "
        "index file. Peak RSS: each process's VmHWM. Recall@100 against exact search on "
        f"{result['queries']:,} sampled rows, the same for every index.",
        "",
        "| way | wall s | of it, workers s | rows/s per worker (training included) | driver peak RSS MB "
        "| workers' peak RSS MB "
        "| recall@100 | same files as one process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for way, r in result["ways"].items():
        workers = len(r["worker_peak_rss_mb"])
        per = f"{rows / r['workers_seconds'] / workers:,.0f}" if workers else "-"
        shown = ", ".join(f"{mb:,.0f}" for mb in r["worker_peak_rss_mb"]) or "-"
        lines.append(
            f"| {way} | {r['seconds']:.1f} | {r['workers_seconds'] or 0:.1f} | {per} | "
            f"{r['driver_peak_rss_mb']:,.0f} | {shown} | {r['recall_at_100']:.4f} | "
            f"{'yes' if r['same_files_as_one_process'] else 'no'} |"
        )
    lines += [
        "",
        f"Two workers took {result['two_over_one_worker']:.2f}x the wall time of one "
        f"({result['two_over_one_worker_workers_only']:.2f}x counting the workers' pipeline only); "
        f"the index is {result['ways']['Beam, 2 workers']['index_mb']:,.0f} MB.",
        "",
        "![index workers](benchmarks/index_workers.png)",
    ]
    publish("index-workers", lines)
    graphs = DOCS / "benchmarks" / "graph_workers.json"
    if graphs.is_file() and result["rows"] >= 10_000_000:
        publish("scale-plan", plan(result, json.loads(graphs.read_text()), command))


# What the plan assumes at each scale (128-d, k 100): nlist grows slower than N (a k-means over a
# million centroids is not trained on one machine), so each list holds more rows.
SCALES = {100_000_000: 65_536, 1_000_000_000: 262_144}
K = 100


def _round_reads() -> tuple[float, float] | None:
    """A SEALS round's bytes and GETs at 10M (median of the cluster benchmark's cold rounds)."""
    path = DOCS / "benchmarks" / "cluster_path.json"
    if not path.is_file():
        return None
    for size in json.loads(path.read_text())["sizes"]:
        if size["rows"] == 10_000_000:
            rounds = size["modes"]["seals"]["rounds"]["cold"]
            totals = [
                (sum(t["bytes"] for t in r.values()), sum(t["server_gets"] for t in r.values()))
                for r in rounds
            ]
            return float(np.median([b for b, _ in totals])), float(np.median([g for _, g in totals]))
    return None


def _took(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    return f"{seconds / 60:,.0f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def plan(index: dict, graph: dict, command: str) -> list[str]:
    """The 100M and 1B plan on Dataflow, from the rates measured at 10M (each input named)."""
    from seals_al.index.graph import records_dtype

    rows, workers = index["rows"], index["ways"]["Beam, 2 workers"]
    train_s = workers["train_seconds"]
    encode_rate = rows / (workers["workers_seconds"] - train_s) / 2  # rows/s per worker process
    query_rate = graph["rows"] / graph["ways"]["Beam, 2 workers"]["seconds"] / 2  # with assembly
    index_b = workers["index_mb"] * 2**20 / rows
    list_b = K * (8 + 4)
    record_b = records_dtype(index["dim"], K, np.dtype("<i8")).itemsize
    nlist0 = int(index["factory"].split("IVF")[1].split("_")[0].split(",")[0])
    driver_b = list_b + record_b + 4 * index["dim"]  # lists, records and the store's copy
    reads = _round_reads()
    lines = [
        "## Plan: 100M and 1B rows on Dataflow",
        "",
        f"Computed by `{command}` from what it and `benchmarks/graph_workers.py` measured at "
        f"{rows:,} x {index['dim']} on this machine (one faiss thread per worker process):",
        "",
        f"- encode (assign to a list and PQ-encode): **{encode_rate:,.0f} rows/s** per worker process "
        f"(2 workers: {workers['workers_seconds']:.0f} s of workers, {train_s:.0f} s of it training);",
        f"- training: **{train_s:.0f} s** on one worker for {index['factory']} on 100,000 rows "
        f"(k-means cost grows with sample x nlist);",
        f"- graph queries (k {K}, nprobe 16): **{query_rate:,.0f} rows/s** per worker process "
        "(2 workers, the driver's assembly included);",
        f"- bytes: the index {index_b:.1f} B a row; the graph's lists {list_b:,} B a row (int64 ids, "
        f"float32 similarities); its records {record_b:,} B a row (int64 ids at 1B);",
    ]
    if reads:
        lines.append(
            f"- a SEALS round at 10M (cluster benchmark, cold, median): {reads[0] / 1e6:.1f} MB in "
            f"{reads[1]:,.0f} GETs, whatever the size of U (1M -> 10M: bytes 1.13x)."
        )
    lines += [
        "",
        "| rows | nlist | rows a list | train (1 vCPU; 16 vCPUs) | encode vCPU-h | graph vCPU-h "
        "| index | graph lists + records | driver disk |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, nlist in SCALES.items():
        growth = (n / nlist) / (rows / nlist0)  # rows a list, against 10M's
        train = train_s * (39 * nlist * nlist) / (100_000 * nlist0) / 3600  # faiss's 39 rows a centroid
        encode_h = n / encode_rate / 3600
        graph_h = (n / query_rate / 3600, n / query_rate / 3600 * growth)
        lines.append(
            f"| {n:,} | {nlist:,} | {n // nlist:,} ({growth:.1f}x) | {train:,.0f} h; {train / 16:,.1f} h | "
            f"{encode_h:,.0f} | {graph_h[0]:,.0f} to {graph_h[1]:,.0f} | {n * index_b / 1e9:,.0f} GB | "
            f"{n * (list_b + record_b) / 1e12:,.1f} TB | {n * driver_b / 1e12:,.1f} TB |"
        )
    n = 1_000_000_000
    graph_s = (n / query_rate, n / query_rate * (n / SCALES[n]) / (rows / nlist0))  # vCPU-seconds
    code_b = 16 + -(-int(np.log2(SCALES[n])) // 8)  # PQ32x4 codes and the list number
    lines += [
        "",
        "How to read it, and the plan:",
        "",
        "- **Training** runs on one worker (the Train step): at 1B, 39 rows per centroid make a "
        "10M-row sample, hours even on a 16-vCPU worker (the table assumes k-means scales linearly "
        "with vCPUs); train on a larger machine or a GPU, or on fewer rows per centroid.",
        "- **Encoding** is embarrassingly parallel: on 64 workers of 8 vCPUs (512 processes) the "
        f"1B encode takes about {_took(n / encode_rate / 512)}. Its parts are {code_b} B a row of "
        f"work files (the codes and the list number), {n * code_b / 1e9:,.0f} GB at 1B, removed "
        "afterwards.",
        f"- **The graph** at 1B: {graph_s[0] / 3600:,.0f} to {graph_s[1] / 3600:,.0f} vCPU-hours, "
        "the upper end if the cost of a query grows with the rows a list holds (nprobe 16 lists are "
        f"scanned); on 512 processes {_took(graph_s[0] / 512)} to {_took(graph_s[1] / 512)}. "
        "Every worker process "
        f"holds the whole index ({n * index_b / 1e9:,.0f} GB at 1B): run one SDK process per VM "
        "(`--experiments=no_use_multiple_sdk_containers`) with faiss's threads on its vCPUs, on "
        "high-memory VMs (n2-highmem-8: 64 GB).",
        "- **What is not distributed yet**: the driver assembles the graph's lists and writes its "
        "records in one process, from a copy of the store on its disk: the last column (lists, "
        f"records and the store copy) is the disk it needs, {n * driver_b / 1e12:,.1f} TB at 1B; "
        "publishing the graph in "
        "shards written by the workers is the next step. The index's driver holds the single-file "
        "index in memory while it writes it; at 1B use the `shards` layout, which it writes a "
        "shard at a time (the `ondisk` one cannot hold fast-scan codes).",
        "- **A round** reads the records of its picks' neighbourhoods, not the graph: its bytes "
        "do not grow with U (measured 1M -> 10M: 1.13x); its GETs depend on how neighbourhoods "
        "are laid out (docs/CLUSTER.md).",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
