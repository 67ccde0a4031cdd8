"""Data that grows: appending --append (default 1%) new rows to an --rows store and its neighbour
graph, side by side with building both again from scratch, in one run.

Data: clustered 384-d unit vectors (as selection_cost.py makes them), the first rows the existing data,
the last ones the arrivals; k = 100; the --factory index searched with nprobe 16.

Both sides run :func:`cached_neighbour_graph`, what a round runs to get its neighbour lists, in a
cache folder of their own:

- append: the store grows by one shard (the old shards hard-linked: :meth:`StoreWriter.add_store`,
  what ``embed_texts`` does for a grown data version), and the graph is extended: the cache's saved
  index of the old graph is read, the new rows are added to it (its trained quantizer kept), each
  new row is queried, old rows are updated by reverse kNN, the grown index is saved
  (:func:`extend_neighbour_graph`).
- rebuild: the whole store written again, the index trained and filled, the graph built from it
  (a query per row) and the index saved for the next growth.
- also shown: the exact pass (:func:`grow_neighbour_graph`), which an exact (Flat) index grows by,
  and any index whose saved copy is gone.

Embedding is left out of both: in a real rebuild every item is embedded again (hours at 1M texts
on a CPU), in an append only the new ones, so these ratios understate the saving. Recall@100 of
the graphs against exhaustive search, on --sample rows (old and new). Writes its section of
docs/BENCHMARKS.md.

    python benchmarks/growth_cost.py --workdir /tmp          # 1M rows: about 25 minutes, 10 GB of disk
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import publish, reproducing_command
from selection_cost import CLUSTERS

from seals_al.index.build import build_index, set_search_parameters
from seals_al.index.graph_cache import cached_neighbour_graph
from seals_al.index.graph_growth import grow_neighbour_graph
from seals_al.store import EmbeddingStore
from seals_al.store_writer import StoreWriter

DIM, K, SHARD = 384, 100, 100_000


def vectors(start: int, stop: int, centres: np.ndarray) -> np.ndarray:
    """Rows start..stop-1 of the data (the same rows whatever the chunking: seeded per row block)."""
    rng = np.random.default_rng(start)
    n = stop - start
    x = centres[rng.integers(0, len(centres), size=n)] + rng.normal(scale=0.04, size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write(path: Path, n: int, centres: np.ndarray, base: EmbeddingStore | None = None) -> EmbeddingStore:
    extra = None if base is None else {"appended_to": base.digest(), "appended": n - len(base)}
    with StoreWriter(path, dim=DIM, model="synthetic", normalized=True, extra=extra) as writer:
        start = 0
        if base is not None:
            writer.add_store(base)
            start = len(base)
        for s in range(start, n, SHARD):
            e = min(s + SHARD, n)
            writer.add([f"i{i}" for i in range(s, e)], vectors(s, e, centres), np.arange(s, e))
    return EmbeddingStore.open(path)


def recall(graph, store: EmbeddingStore, sample: np.ndarray, rows: np.ndarray) -> float:
    """Mean recall@K of the graph's lists for the sample, against exhaustive search over rows."""
    got = graph.ids(sample, K)
    queries = store.vectors(sample)
    best = np.full((len(sample), K), -np.inf, np.float32)
    best_ids = np.full((len(sample), K), -1, np.int64)
    for s in range(0, len(rows), SHARD):
        block = rows[s : s + SHARD]
        sims = queries @ store.vectors(block).T
        sims[np.equal.outer(sample, block)] = -np.inf
        sims = np.concatenate([best, sims], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(block, (len(sample), len(block)))], axis=1)
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        best, best_ids = np.take_along_axis(sims, top, 1), np.take_along_axis(ids, top, 1)
    pairs = zip(got.tolist(), best_ids.tolist(), strict=True)
    return float(np.mean([len(set(a) & set(b)) / K for a, b in pairs]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows before the append")
    parser.add_argument("--append", type=float, default=0.01, help="new rows, as a fraction of --rows")
    parser.add_argument("--factory", default="IVF4096_HNSW32,Flat")
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    n_old = args.rows
    n_new = n_old + round(args.rows * args.append)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLUSTERS, DIM))  # as selection_cost.make_data: tight clusters

    timed: dict[str, float] = {}

    def graph(store: EmbeddingStore, rows: np.ndarray, cache: Path, name: str):
        """The round's way to its neighbour lists; the index build (when there is one) timed apart."""

        def index():
            started = time.perf_counter()
            built = build_index(store, rows, args.factory, progress=True)
            set_search_parameters(built, nprobe=16)
            timed[f"{name} index"] = time.perf_counter() - started
            return built

        started = time.perf_counter()
        out = cached_neighbour_graph(index, store, lambda: rows, name, args.factory, K, cache)
        timed[f"{name} graph"] = time.perf_counter() - started - timed.get(f"{name} index", 0.0)
        return out

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"setting up: {n_old:,} rows, their index and graph", flush=True)
        old_store = write(work / "old", n_old, centres)
        old_graph = graph(old_store, np.arange(n_old), work / "cache", "old")

        print(f"append: {n_new - n_old:,} rows", flush=True)
        rows = np.arange(n_new)
        started = time.perf_counter()
        grown_store = write(work / "grown", n_new, centres, base=old_store)
        store_append = time.perf_counter() - started
        grown = graph(grown_store, rows, work / "cache", "grown")
        graph_append = timed["grown graph"]
        if "grown index" in timed or "updated_rows" not in grown.manifest:
            raise SystemExit("the append built an index: the saved one was not used")

        print("the exact pass", flush=True)
        started = time.perf_counter()
        exact = grow_neighbour_graph(old_graph, grown_store, rows, work / "exact-graph", progress=True)
        exact_pass = time.perf_counter() - started

        print("rebuild", flush=True)
        started = time.perf_counter()
        rebuilt_store = write(work / "rebuilt", n_new, centres)
        store_rebuild = time.perf_counter() - started
        rebuilt = graph(rebuilt_store, rows, work / "rebuilt-cache", "rebuilt")
        index_rebuild, graph_rebuild = timed["rebuilt index"], timed["rebuilt graph"]

        half = args.sample // 2
        sample = np.sort(
            np.concatenate(
                [
                    rng.choice(n_old, half, replace=False),
                    rng.choice(np.arange(n_old, n_new), min(half, n_new - n_old), replace=False),
                ]
            )
        )
        grown_recall = recall(grown, grown_store, sample, rows)
        exact_recall = recall(exact, grown_store, sample, rows)
        rebuilt_recall = recall(rebuilt, rebuilt_store, sample, rows)
        updated = int(grown.manifest["updated_rows"])

    append = store_append + graph_append
    rebuild = store_rebuild + index_rebuild + graph_rebuild
    command = reproducing_command("growth_cost.py", parser, args, "rows", "append", "factory", "sample")
    lines = [
        "## Growing data: appending to the store, the index and the neighbour graph vs building them again",
        "",
        f"`{command}`: {n_old:,} rows of 384-d clustered unit vectors, then {n_new - n_old:,} more "
        f"({args.append:.0%}); k = {K}; {args.factory}, nprobe 16; one process, 2 cores. Each side is "
        "what a round runs for its neighbour lists (`cached_neighbour_graph`). Embedding is left out "
        "of both sides (a rebuild would embed every item again, an append only the new ones).",
        "",
        "| | append | rebuild |",
        "|---|---|---|",
        f"| store | {store_append:.1f} s (a new shard; old ones hard-linked) | {store_rebuild:.1f} s |",
        "| index | in the graph's time: the saved index read, the new rows added "
        f"| {index_rebuild:.1f} s (trained and filled) |",
        f"| neighbour graph | {graph_append:.1f} s (extended; {updated:,} old rows updated; the index saved) "
        f"| {graph_rebuild:.1f} s (a query per row; the index saved) |",
        f"| **total** | **{append:.1f} s** | **{rebuild:.1f} s** |",
        f"| recall@{K} ({len(sample):,} rows, old and new) | {grown_recall:.4f} | {rebuilt_recall:.4f} |",
        "",
        f"The append takes **{append / rebuild:.1%}** of the rebuild (goal: at most 5%); its graph's "
        f"recall@{K} is {grown_recall - rebuilt_recall:+.4f} against the rebuilt one's (goal: within 0.01).",
        "",
        f"The exact pass (every old row against the new ones: how the graph of an exact, Flat, index "
        f"grows, and any graph whose saved index is gone) took {exact_pass:.1f} s here, "
        f"{(store_append + exact_pass) / rebuild:.1%} of the rebuild with the store, recall@{K} "
        f"{exact_recall:.4f}. For a Flat index it gives the rebuilt graph, and so the rebuilt pool "
        "(tests/test_growth.py).",
    ]
    publish("growth-cost", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
