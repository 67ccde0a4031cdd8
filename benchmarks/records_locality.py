"""How many ranges of the neighbour graph's records a pick's neighbours take, under the records'
order (by IVF list, lists chained nearest first, rows in id order: seals_al.index.graph.
locality_order) and two finer orders tried inside each list: by each row's second-nearest list,
and by k-means cells of about 32 rows. What docs/CLUSTER.md says of a round's requests at 1M and
10M rows comes from here.

Data: a store written by benchmarks/cluster_path.py (its synthetic clustered unit vectors). Each
of --queries random rows' exact k nearest neighbours (brute force, in chunks) is one pick; two
neighbours are in one range when their records are less than 32 KiB apart, as seals_al.ranges
merges them.

    python benchmarks/records_locality.py /tmp/seals-cluster-path/data/n1000000-d128/data/store 4000
    python benchmarks/records_locality.py /tmp/seals-cluster-path/data/n10000000-d128/data/store 16384

The store is read into RAM (5 GB at 10M x 128): about 10 minutes at 10M on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seals_al.index.graph import _chain, records_dtype
from seals_al.store import EmbeddingStore

GAP = 32 << 10  # seals_al.ranges merges reads less than this apart


def exact_knn(x: np.ndarray, queries: np.ndarray, k: int, chunk: int = 500_000) -> np.ndarray:
    """The k nearest rows of each query (by inner product), the query itself left out."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(x), chunk):
        sims = x[queries] @ x[start : start + chunk].T
        own = (queries >= start) & (queries < start + chunk)
        sims[np.flatnonzero(own), queries[own] - start] = -np.inf
        all_s = np.concatenate([best_s, sims], axis=1)
        all_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)], 1
        )
        top = np.argpartition(-all_s, k, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def sub_cells(x: np.ndarray, lists: np.ndarray, nlist: int, rows_per_cell: int = 32) -> np.ndarray:
    """Each row's k-means cell inside its list (cells chained nearest first), about 32 rows a cell."""
    cell = np.zeros(len(x), np.int64)
    order = np.argsort(lists, kind="stable")
    bounds = np.searchsorted(lists[order], np.arange(nlist + 1))
    for number in range(nlist):
        rows = order[bounds[number] : bounds[number + 1]]
        m = len(rows) // rows_per_cell
        if m < 2:
            continue
        km = faiss.Kmeans(x.shape[1], m, niter=8, seed=1, spherical=True, verbose=False)
        km.train(x[rows])
        _, at = km.index.search(x[rows], 1)
        rank = np.empty(m, np.int64)
        rank[_chain(km.centroids)] = np.arange(m)
        cell[rows] = rank[at[:, 0]]
    return cell


def ranges_per_pick(order: np.ndarray, neighbours: np.ndarray, record_bytes: int) -> tuple[float, float]:
    """Mean and 90th percentile of the ranges a pick's neighbours take with the records in ``order``."""
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    gap = max(1, GAP // record_bytes)
    counts = [1 + int((np.diff(np.sort(where[row])) - 1 >= gap).sum()) for row in neighbours]
    return float(np.mean(counts)), float(np.percentile(counts, 90))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("nlist", type=int, help="IVF lists, as the benchmark's index has them")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(2)
    store = EmbeddingStore.open(args.store)
    x = np.ascontiguousarray(np.concatenate([c for _, c in store.iter_chunks(1_000_000)]), np.float32)
    n, dim = x.shape
    record_bytes = records_dtype(dim, args.k, np.dtype("<i4")).itemsize
    started = time.perf_counter()
    quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.IndexIVFFlat(quantizer, dim, args.nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    ivf.train(x[rng.choice(n, min(n, 200_000), replace=False)])
    _, two = quantizer.search(x, 2)
    lists = two[:, 0]
    rank = np.empty(args.nlist, np.int64)
    rank[_chain(quantizer.reconstruct_n(0, args.nlist))] = np.arange(args.nlist)
    neighbours = exact_knn(x, rng.choice(n, args.queries, replace=False), args.k)
    print(f"{n:,} x {dim}, {args.nlist:,} lists, records of {record_bytes:,} bytes", flush=True)
    spread = np.mean([len(np.unique(lists[row])) for row in neighbours])
    print(f"lists a pick's {args.k} nearest fall in: {spread:.2f}")
    orders = {
        "list, row id (the records' order)": np.lexsort((np.arange(n), rank[lists])),
        "list, second-nearest list, row id": np.lexsort((np.arange(n), rank[two[:, 1]], rank[lists])),
        "list, k-means cell of 32 rows, row id": np.lexsort(
            (np.arange(n), sub_cells(x, lists, args.nlist), rank[lists])
        ),
    }
    for name, order in orders.items():
        mean, p90 = ranges_per_pick(order, neighbours, record_bytes)
        print(f"{name}: {mean:.1f} ranges a pick (p90 {p90:.0f})", flush=True)
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
