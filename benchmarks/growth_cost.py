"""Data that grows: appending --append (default 1%) new rows to an --rows store and its neighbour
graph, side by side with building both again from scratch, in one run.

Data: clustered 384-d unit vectors (as selection_cost.py makes them), the first rows the existing data,
the last ones the arrivals; k = 100.

- append: the store grows by one shard (the old shards hard-linked: :meth:`StoreWriter.add_store`,
  what ``embed_texts`` does for a grown data version) and the graph is grown from the old one
  (:func:`grow_neighbour_graph`, what a campaign's next round does). No index is built: with the
  graph a round needs none.
- rebuild: the whole store written again, the --factory index trained and filled (nprobe 16), and
  the graph built from it (:func:`build_neighbour_graph`).

Embedding is left out of both: in a real rebuild every item is embedded again (hours at 1M texts
on a CPU), in an append only the new ones, so these ratios understate the saving. Recall@100 of
both graphs against exhaustive search, on --sample rows (old and new). Writes its section of
docs/BENCHMARKS.md.

    python benchmarks/growth_cost.py --workdir /tmp          # 1M rows: about 15 minutes, 6 GB of disk
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
from seals_al.index.neighbours import build_neighbour_graph, grow_neighbour_graph
from seals_al.store import EmbeddingStore, StoreWriter

DIM, K, SHARD = 384, 100, 100_000


def vectors(start: int, stop: int, centres: np.ndarray) -> np.ndarray:
    """Rows start..stop-1 of the data (the same rows whatever the chunking: seeded per row block)."""
    rng = np.random.default_rng(start)
    n = stop - start
    x = centres[rng.integers(0, len(centres), size=n)] + rng.normal(scale=0.04, size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write(path: Path, n: int, centres: np.ndarray, base: EmbeddingStore | None = None) -> EmbeddingStore:
    with StoreWriter(path, dim=DIM, model="synthetic", normalized=True) as writer:
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

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"setting up: {n_old:,} rows, their index and graph", flush=True)
        old_store = write(work / "old", n_old, centres)
        old_rows = np.arange(n_old)
        index = build_index(old_store, old_rows, args.factory, progress=True)
        set_search_parameters(index, nprobe=16)
        old_graph = build_neighbour_graph(index, old_store, old_rows, K, work / "old-graph", progress=True)
        del index

        print(f"append: {n_new - n_old:,} rows", flush=True)
        started = time.perf_counter()
        grown_store = write(work / "grown", n_new, centres, base=old_store)
        store_append = time.perf_counter() - started
        started = time.perf_counter()
        rows = np.arange(n_new)
        grown = grow_neighbour_graph(old_graph, grown_store, rows, work / "grown-graph", progress=True)
        graph_append = time.perf_counter() - started

        print("rebuild", flush=True)
        started = time.perf_counter()
        rebuilt_store = write(work / "rebuilt", n_new, centres)
        store_rebuild = time.perf_counter() - started
        started = time.perf_counter()
        index = build_index(rebuilt_store, rows, args.factory, progress=True)
        set_search_parameters(index, nprobe=16)
        index_rebuild = time.perf_counter() - started
        started = time.perf_counter()
        rebuilt = build_neighbour_graph(index, rebuilt_store, rows, K, work / "rebuilt-graph", progress=True)
        graph_rebuild = time.perf_counter() - started

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
        rebuilt_recall = recall(rebuilt, rebuilt_store, sample, rows)

    append = store_append + graph_append
    rebuild = store_rebuild + index_rebuild + graph_rebuild
    command = reproducing_command("growth_cost.py", parser, args, "rows", "append", "factory", "sample")
    lines = [
        "## Growing data: appending to the store and the neighbour graph vs building them again",
        "",
        f"`{command}`: {n_old:,} rows of 384-d clustered unit vectors, then {n_new - n_old:,} more "
        f"({args.append:.0%}); k = {K}; one process, 2 cores. Embedding is left out of both sides "
        "(a rebuild would embed every item again, an append only the new ones).",
        "",
        "| | append | rebuild |",
        "|---|---|---|",
        f"| store | {store_append:.1f} s (a new shard; old ones hard-linked) | {store_rebuild:.1f} s |",
        f"| index | none (the graph gives the lists) | {index_rebuild:.1f} s ({args.factory}, nprobe 16) |",
        f"| neighbour graph | {graph_append:.1f} s (grown) | {graph_rebuild:.1f} s (a query per row) |",
        f"| **total** | **{append:.1f} s** | **{rebuild:.1f} s** |",
        f"| recall@{K} ({len(sample):,} rows, old and new) | {grown_recall:.4f} | {rebuilt_recall:.4f} |",
        "",
        f"The append takes **{append / rebuild:.1%}** of the rebuild (goal: at most 5%); its graph's "
        f"recall@{K} is {grown_recall - rebuilt_recall:+.4f} against the rebuilt one's (goal: within 0.01). "
        "Lists involving a new row are exact; old rows keep their lists, merged with the new rows that "
        "enter them. For an exact (Flat) index the grown graph is the rebuilt one, and so is the pool "
        "(tests/test_growth.py).",
    ]
    publish("growth-cost", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
