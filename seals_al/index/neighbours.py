"""Where the candidate pool gets neighbour lists: a *neighbour source*.

Either the live index (:class:`IndexNeighbours`, one faiss query per pick) or a
:class:`~seals_al.index.graph.NeighbourGraph`, the k neighbours of every row of U computed once
with batched queries and memory-mapped. Both return the same lists for the same index; the graph
turns each pick's query into an O(1) read. Also here: the kNN density that information density
weighs entropy with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import faiss
import numpy as np
from tqdm import tqdm

from seals_al.index.build import search
from seals_al.store import EmbeddingStore


def neighbour_density(D: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each query to its neighbours (padding ignored), for information density."""
    valid = np.isfinite(D)
    total = np.where(valid, D, 0.0).sum(axis=1)
    return (total / np.maximum(valid.sum(axis=1), 1)).astype(np.float32)


def knn_density(
    index: faiss.Index,
    store: EmbeddingStore,
    row_ids: np.ndarray,
    k: int,
    *,
    chunk_rows: int = 4096,
    progress: bool = True,
) -> np.ndarray:
    """Density of every given row from the kNN graph: one batched search per chunk, no all-pairs pass."""
    out = np.empty(len(row_ids), dtype=np.float32)
    with tqdm(total=len(row_ids), desc="kNN density", unit="vec", disable=not progress) as bar:
        for start in range(0, len(row_ids), chunk_rows):
            ids = row_ids[start : start + chunk_rows]
            D, _ = search(index, store.vectors(ids), k, ids)
            out[start : start + len(ids)] = neighbour_density(D)
            bar.update(len(ids))
    return out


VectorsOf = Callable[[], np.ndarray]


class Neighbours(Protocol):
    """A source of neighbour lists keyed by global row id."""

    def knn(self, row_ids: np.ndarray, k: int, vectors: VectorsOf) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) of the k neighbours of each row, itself excluded; ``vectors`` gives the rows'
        vectors when the source needs them."""
        ...

    def ids(self, row_ids: np.ndarray, k: int, vectors: VectorsOf) -> np.ndarray:
        """I alone (a source may skip reading the similarities)."""
        ...


class IndexNeighbours:
    """Neighbour lists from live faiss queries."""

    def __init__(self, index: faiss.Index):
        self.index = index

    def knn(self, row_ids: np.ndarray, k: int, vectors: VectorsOf) -> tuple[np.ndarray, np.ndarray]:
        return search(self.index, vectors(), k, row_ids)

    def ids(self, row_ids: np.ndarray, k: int, vectors: VectorsOf) -> np.ndarray:
        return self.knn(row_ids, k, vectors)[1]


def describe_index(index: faiss.Index) -> str:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return f"{type(inner).__name__} ntotal={index.ntotal} d={index.d}"


def as_neighbours(source: faiss.Index | Neighbours) -> Neighbours:
    """Accept a faiss index (queried live) or any neighbour source such as a graph."""
    return IndexNeighbours(source) if isinstance(source, faiss.Index) else source
