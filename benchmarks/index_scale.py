"""Index builds at scale, and one selection round at 10M rows.

1. 1M x 384 clustered unit vectors: Flat, IVF-Flat, IVF-PQ and HNSW built by `build_index_dir`
   (the code behind `seals-al build-index`): build time, index size, peak anonymous memory
   (RssAnon) during the build, recall@100 against exact search and query time.
2. 10M x 128: the store is written shard by shard (StoreWriter) and memory-mapped; an IVF-PQ
   index is trained on a sample and built shard by shard. Peak RssAnon is reported next to the
   size of the raw vectors, which are never all in memory at once.
3. With that 10M index, one selection round SEALS vs global, 5 rounds of 100 from 5 + 95 seeds:
   SEALS querying the index at every pick, and SEALS reading the neighbour graph of U built once
   from that index. The store's vectors and the graph's neighbour lists are in RAM for selection
   (every mode reads the same in-memory store). Each round is timed three times from the same
   state, fastest kept, for every mode (selection_cost.run_mode). The same at 100k x 128 for the
   growth of SEALS' round time.

Writes docs/benchmarks/index_scale.json and its section of docs/BENCHMARKS.md.

    python benchmarks/index_scale.py --workdir /tmp      # about 40 minutes on 2 cores, 25 GB of disk
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, update_section, write_json
from selection_cost import CLUSTERS, RARE, run_mode

from seals_al.index.directory import build_index_dir, open_index_dir
from seals_al.index.graph import NeighbourGraph, build_neighbour_graph
from seals_al.index.recall import measure_recall
from seals_al.store import EmbeddingStore
from seals_al.store_writer import StoreWriter
from seals_al.strategies import get_strategy

RESULTS = DOCS / "benchmarks" / "index_scale.json"
# 4-bit fast-scan PQ: the same 16 bytes per vector as PQ16 with SIMD scanning, which makes the
# 10M neighbour-graph build (10M queries) about 4x faster at a small cost in recall.
LARGE_FACTORY = "IVF4096,PQ32x4fs"
SMALL_FACTORY = "IVF256,PQ32x4fs"


class PeakAnon:
    """Samples this process's RssAnon (anonymous resident memory) every 50 ms; file-backed pages
    of memory-mapped stores are not counted, so this is what a build really holds. Each build runs
    in a fresh process, so the growth from the start is that build's own."""

    def __enter__(self) -> PeakAnon:
        self.peak = self.start = _rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_anon())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def clustered_store(path: Path, n: int, dim: int, seed: int, shard_rows: int = 1_000_000):
    """Write n clustered unit vectors shard by shard; cluster 0 (0.5%) is the rare concept."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.zeros(n, np.int8)
    noise = 0.04 * np.sqrt(384 / dim)  # the same angular spread at any dimension
    with StoreWriter(path, dim=dim, model="synthetic", normalized=True) as writer:
        for start in tqdm(range(0, n, shard_rows), desc=f"data {n:,} x {dim}", unit="shard"):
            m = min(shard_rows, n - start)
            cluster = rng.integers(1, CLUSTERS, m)
            cluster[rng.random(m) < RARE] = 0
            block = centres[cluster] + rng.normal(scale=noise, size=(m, dim)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            writer.add([str(i) for i in range(start, start + m)], block)
            truth[start : start + m] = cluster == 0
    return EmbeddingStore.open(path), truth


def build(store, out: Path, factory: str, params: dict, recall_queries: int) -> dict:
    """Build in a fresh process, so its peak anonymous memory is this build's alone."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_build_child, args=(str(store.path), str(out), factory, params, queue))
    child.start()
    entry = queue.get()
    child.join()
    if recall_queries:
        entry["recall"] = measure_recall(open_index_dir(out), store, k=100, queries=recall_queries, seed=0)
    return entry


def _build_child(store_path: str, out: str, factory: str, params: dict, queue) -> None:
    store = EmbeddingStore.open(store_path)  # memory-mapped: its pages are file-backed, not anonymous
    train_size = 40 * _nlist(factory) if "IVF" in factory else 100_000
    with PeakAnon() as memory:
        manifest = build_index_dir(
            store,
            out,
            factory,
            layout="single",
            train_size=train_size,
            search_params=params,
            recall_queries=0,
            progress=False,
        )
    size = sum(p.stat().st_size for p in Path(out).iterdir() if p.name != "manifest.json")
    queue.put(
        {
            "factory": factory,
            "params": params,
            "build_seconds": manifest["build_seconds"],
            "index_mb": size / 2**20,
            "peak_anon_mb": memory.mb,
            "baseline_anon_mb": memory.start / 2**20,
        }
    )


def _nlist(factory: str) -> int:
    return int(factory.split(",")[0].removeprefix("IVF").split("_")[0])


def selection(store, index, truth, rounds: int, graph_dir: Path) -> dict:
    """SEALS (index per pick, then the graph) and global rounds; the graph's build is timed too."""
    started = time.perf_counter()
    graph = build_neighbour_graph(index, store, store.row_ids, 100, graph_dir)
    out: dict = {
        "graph_build_seconds": time.perf_counter() - started,
        "graph_mb": sum(p.stat().st_size for p in graph_dir.iterdir()) / 2**20,
    }
    # Selection reads the vectors from RAM in every mode (as a selection server would hold them),
    # and the graph's neighbour lists too (int32: 4 GB at 10M x 100).
    graph = NeighbourGraph.open(graph_dir, in_memory=True)
    store = EmbeddingStore.open(store.path, in_memory=True)
    strategy = get_strategy("maxent")
    sources = {"seals-index": index, "seals-graph": graph, "global": None}
    for mode, neighbours in sources.items():
        run = run_mode(mode, store, neighbours, truth, strategy, rounds, 100, 100, 0)
        out[mode] = {
            "median_ms": 1e3 * float(np.median([r["seconds"] for r in run["rounds"]])),
            "scored_fraction_last": run["rounds"][-1]["scored_fraction"],
            "rounds": run["rounds"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", help="where the synthetic stores and indexes go (default: a temp dir)")
    parser.add_argument("--large", type=int, default=10_000_000)
    parser.add_argument("--medium", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--recall-queries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    results: dict = {"command": " ".join(["python benchmarks/index_scale.py", *argv]), "config": vars(args)}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        store, _ = clustered_store(root / "m384", args.medium, 384, 0)
        results["medium"] = [
            build(store, root / f"ix-{i}", factory, params, args.recall_queries)
            for i, (factory, params) in enumerate(
                [
                    ("Flat", {}),
                    ("IVF4096,Flat", {"nprobe": 16}),
                    ("IVF4096,PQ48", {"nprobe": 16}),
                    ("HNSW32", {"efSearch": 128}),
                ]
            )
        ]
        del store
        raw_mb = args.large * 128 * 4 / 2**20
        big, truth = clustered_store(root / "l128", args.large, 128, 1)
        entry = build(big, root / "ix-large", LARGE_FACTORY, {"nprobe": 16}, args.recall_queries // 5)
        entry["raw_vectors_mb"] = raw_mb
        results["large"] = entry
        results["large"]["selection"] = selection(
            big, open_index_dir(root / "ix-large"), truth, args.rounds, root / "graph-large"
        )
        del big
        small, small_truth = clustered_store(root / "s128", args.small, 128, 1)
        build(small, root / "ix-small", SMALL_FACTORY, {"nprobe": 16}, 0)
        results["small_selection"] = selection(
            small, open_index_dir(root / "ix-small"), small_truth, args.rounds, root / "graph-small"
        )
    write_json(RESULTS, results)
    update_section("index_scale", _markdown(results))
    print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1, default=str)[:3000])
    return 0


def _markdown(r: dict) -> str:
    lines = [
        "## Index builds at scale and a selection round at 10M",
        "",
        f"Reproduce: `{r['command']}`. Synthetic clustered unit vectors (1,000 clusters), one process.",
        "",
        f"### {r['config']['medium']:,} x 384",
        "",
        "| index | build s | index MB | peak anonymous memory of the build, MB | recall@100 | query ms |",
        "|---|---|---|---|---|---|",
    ]
    for e in r["medium"]:
        params = ", ".join(f"{k}={v}" for k, v in e["params"].items())
        lines.append(
            f"| {e['factory']}{f' ({params})' if params else ''} | {e['build_seconds']:.0f} | "
            f"{e['index_mb']:.0f} | {e['peak_anon_mb']:.0f} | {e['recall']['recall_at_k']:.3f} | "
            f"{e['recall']['query_ms']:.3f} |"
        )
    large = r["large"]
    sel, small = large["selection"], r["small_selection"]
    lines += [
        "",
        f"### {r['config']['large']:,} x 128, {large['factory']} (nprobe 16)",
        "",
        f"Built shard by shard from a memory-mapped store in {large['build_seconds']:.0f} s; index "
        f"{large['index_mb']:.0f} MB; peak anonymous memory of the build process "
        f"{large['peak_anon_mb']:.0f} MB "
        "(above its start, in a fresh process), "
        f"against {large['raw_vectors_mb']:.0f} MB of raw vectors; recall@100 "
        f"{large['recall']['recall_at_k']:.3f} ({large['recall']['queries']} queries, "
        f"{large['recall']['query_ms']:.2f} ms each).",
        "",
        f"Neighbour graph of U (k = 100, from that index; int32 ids): built in "
        f"{sel['graph_build_seconds']:.0f} s, {sel['graph_mb']:,.0f} MB on disk. For selection, the "
        "store's vectors and the graph's neighbour lists are read into RAM; every mode uses that "
        "same in-memory store. Each round's selection is timed three times from the same state, "
        f"fastest kept, in every mode; the table gives the median over the {r['config']['rounds']} "
        "rounds.",
        "",
        "| selection (maxent, 600 labels, median ms per round) | seals, faiss query per pick "
        "| seals, neighbour graph | global | global / seals (query) | global / seals (graph) "
        "| seals scored % of U |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, e in (
        (f"{r['config']['large']:,} rows", sel),
        (f"{r['config']['small']:,} rows ({SMALL_FACTORY})", small),
    ):
        ms = {mode: e[mode]["median_ms"] for mode in ("seals-index", "seals-graph", "global")}
        lines.append(
            f"| {label} | {ms['seals-index']:.1f} | {ms['seals-graph']:.1f} | {ms['global']:.1f} | "
            f"{ms['global'] / ms['seals-index']:.1f}x | {ms['global'] / ms['seals-graph']:.1f}x | "
            f"{100 * e['seals-graph']['scored_fraction_last']:.3f}% |"
        )
    growth = {
        m: sel[m]["median_ms"] / small[m]["median_ms"] for m in ("seals-index", "seals-graph", "global")
    }
    lines += [
        "",
        f"Round time from {r['config']['small']:,} to {r['config']['large']:,} rows: SEALS with the "
        f"graph {growth['seals-graph']:.1f}x, SEALS querying the index {growth['seals-index']:.1f}x, "
        f"global {growth['global']:.1f}x.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
