"""Recall of an approximate index against exact search, measured on sampled rows."""

from __future__ import annotations

import time

import faiss
import numpy as np

from seals_al.index.build import search
from seals_al.store import EmbeddingStore


def exact_knn(
    store: EmbeddingStore, queries: np.ndarray, query_ids: np.ndarray, k: int, chunk_rows: int = 65_536
):
    """Exact (D, I) by brute force over the store, a chunk at a time (no full copy), self excluded;
    each chunk's candidates cut to the best k by a partition (linear), the k sorted at the end."""
    best_D = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_I = np.full((len(queries), k), -1, dtype=np.int64)
    for start, block in store.iter_chunks(chunk_rows):
        sims = queries @ np.asarray(block).T
        ids = np.broadcast_to(store.row_ids[start : start + len(block)], sims.shape)
        sims = np.where(ids == query_ids[:, None], -np.inf, sims)
        D = np.concatenate([best_D, sims], axis=1)
        I = np.concatenate([best_I, ids], axis=1)
        top = np.argpartition(-D, k - 1, axis=1)[:, :k]
        best_D, best_I = np.take_along_axis(D, top, 1), np.take_along_axis(I, top, 1)
    order = np.argsort(-best_D, axis=1, kind="stable")
    return np.take_along_axis(best_D, order, 1), np.take_along_axis(best_I, order, 1)


def measure_recall(index: faiss.Index, store: EmbeddingStore, *, k: int, queries: int, seed: int) -> dict:
    """recall@k of the index against exact search, on rows of the store sampled as queries."""
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(store.row_ids, size=min(queries, len(store)), replace=False))
    vectors = store.vectors(rows)
    started = time.perf_counter()
    _, approx = search(index, vectors, k, rows)
    query_seconds = time.perf_counter() - started
    _, exact = exact_knn(store, vectors, rows, k)
    hits = [
        len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) for a, e in zip(approx, exact, strict=True)
    ]
    return {
        "k": k,
        "queries": len(rows),
        "recall_at_k": float(np.mean(hits) / k),
        "query_ms": 1e3 * query_seconds / len(rows),
    }
