"""A neighbour graph brought up to date with its store: rows appended (grown) or changed
(extended), without recomputing the lists of rows whose neighbours cannot have changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from seals_al.arrays import sample_of, sorted_unique
from seals_al.errors import SealsError
from seals_al.index.build import search
from seals_al.index.graph import GRAPH_FORMAT, ROWS_SAMPLE, NeighbourGraph
from seals_al.index.neighbours import describe_index
from seals_al.storage.files import atomic_dir
from seals_al.store import EmbeddingStore


def _top(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (similarity, id) pairs, best first; ties keep the columns' order.
    ``ids`` is per entry ([rows, columns]) or per column ([columns])."""
    kk = min(k, sims.shape[1])
    if sims.shape[1] > kk:
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        part.sort(axis=1)  # columns' order again, for ties
        sims = np.take_along_axis(sims, part, 1)
        ids = ids[part] if ids.ndim == 1 else np.take_along_axis(ids, part, 1)
    elif ids.ndim == 1:
        ids = np.broadcast_to(ids, sims.shape)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def _entries(owner: np.ndarray, sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Scattered (owner, similarity, id) entries, owners ascending, as padded per-owner lists:
    (the owners, (similarities, ids)); padding is -inf and -1."""
    owners, first, counts = np.unique(owner, return_index=True, return_counts=True)
    slot = np.arange(len(owner)) - np.repeat(first, counts)
    row = np.repeat(np.arange(len(owners)), counts)
    out_sims = np.full((len(owners), int(counts.max())), -np.inf, np.float32)
    out_ids = np.full((len(owners), int(counts.max())), -1, np.int64)
    out_sims[row, slot], out_ids[row, slot] = sims, ids
    return owners, (out_sims, out_ids)


def _merge(lists: tuple[np.ndarray, np.ndarray], more: tuple[np.ndarray, np.ndarray], k: int):
    """Two sets of (similarities, ids) lists for the same rows, merged: each row's k best."""
    return _top(np.concatenate([lists[0], more[0]], axis=1), np.concatenate([lists[1], more[1]], axis=1), k)


def grow_neighbour_graph(
    base: NeighbourGraph,
    store: EmbeddingStore,
    row_ids: np.ndarray,
    out_dir: str | Path,
    *,
    chunk_rows: int = 2048,
    progress: bool = True,
) -> NeighbourGraph:
    """The graph of ``row_ids`` (the base graph's rows and new ones) from the base graph, without
    querying an index: one pass over the old rows computes their similarities to the new rows,
    which gives each old row the new rows that enter its top k (merged into its list) and each new
    row its neighbours among the old rows; the new rows among themselves are one product.

    Every list is then exactly what an exhaustive search gives for the pairs that involve a new
    row, and the base's own for pairs of old rows: for a graph built with an exact (Flat) index the
    result is the graph of the grown rows, as if built from scratch. Cost: O(old x new x dim)
    multiply-adds, against O(rows^2 x dim) for a Flat rebuild.

    Args:
        base: the graph of the previous rows (a subset of ``row_ids``).
        store: the vectors of every row (unit rows: similarity is the inner product).
        row_ids: the rows to cover.
        out_dir: the graph directory to write (atomically).
        chunk_rows: old rows per pass.
        progress: show a progress bar.
    """
    started = time.perf_counter()
    k = base.k
    row_ids, old, new = _old_and_new(base, row_ids)
    x_new = store.vectors(new)
    # The new rows among themselves first: their lists then start with a finite k-th similarity,
    # which most old rows do not beat.
    among = x_new @ x_new.T
    np.fill_diagonal(among, -np.inf)  # a row is not its own neighbour
    new_sims, new_ids = _top(among, new, k)
    new_sims, new_ids = np.array(new_sims), np.array(new_ids)
    if new_sims.shape[1] < k:  # fewer new rows than k: pad
        pad = k - new_sims.shape[1]
        new_sims = np.pad(new_sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        new_ids = np.pad(new_ids, ((0, 0), (0, pad)), constant_values=-1)
    del among
    with atomic_dir(out_dir, GRAPH_FORMAT) as tmp:
        ids, sims = _grown_arrays(tmp, base, store, row_ids)
        at_old = np.searchsorted(row_ids, old)
        with tqdm(total=len(old), desc=f"kNN graph k={k}, grow", unit="row", disable=not progress) as bar:
            for start in range(0, len(old), chunk_rows):
                rows = old[start : start + chunk_rows]
                block = store.vectors(rows) @ x_new.T  # old rows x new rows
                listed_sims, listed_ids = base.knn(rows, k)
                listed_sims, listed_ids = np.array(listed_sims), np.array(listed_ids, np.int64)
                # Only the pairs that beat a list's k-th similarity change it: merge just those.
                r, c = np.nonzero(block > listed_sims[:, -1:])
                if len(r):
                    at, more = _entries(r, block[r, c], new[c])
                    listed_sims[at], listed_ids[at] = _merge((listed_sims[at], listed_ids[at]), more, k)
                where = at_old[start : start + len(rows)]
                sims[where], ids[where] = listed_sims, listed_ids
                c, r = np.nonzero(new_sims[:, -1:] < block.T)
                if len(c):
                    at, more = _entries(c, block[r, c], rows[r])
                    new_sims[at], new_ids[at] = _merge((new_sims[at], new_ids[at]), more, k)
                bar.update(len(rows))
        new_ids[~np.isfinite(new_sims)] = -1
        at_new = np.searchsorted(row_ids, new)
        sims[at_new], ids[at_new] = new_sims, new_ids
        _finish_grown(tmp, ids, sims, base, store, len(row_ids), len(new), started)
    return NeighbourGraph.open(out_dir)


def _old_and_new(base: NeighbourGraph, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the rows to cover, sorted; the base graph's rows; the rows new to it); the base's rows
    must all still be there."""
    row_ids = np.sort(np.asarray(row_ids, dtype=np.int64))
    old = np.asarray(base._row_ids[:], dtype=np.int64)
    if not np.isin(old, row_ids).all():
        raise SealsError(f"{base.uri}: rows of the base graph are gone; build the graph again")
    return row_ids, old, np.setdiff1d(row_ids, old, assume_unique=True)  # each a set of rows


def _grown_arrays(tmp: Path, base: NeighbourGraph, store: EmbeddingStore, row_ids: np.ndarray):
    """A grown graph's row ids written, and its (neighbours, similarities) arrays opened for writing."""
    np.save(tmp / "row_ids.npy", row_ids)
    np.save(tmp / ROWS_SAMPLE, sample_of(row_ids))
    id_type = base._ids.dtype
    if len(store) and int(store.row_ids.max()) > np.iinfo(np.int32).max:
        id_type = np.int64
    shape = (len(row_ids), base.k)
    ids = np.lib.format.open_memmap(tmp / "neighbours.npy", mode="w+", dtype=id_type, shape=shape)
    sims = np.lib.format.open_memmap(tmp / "similarities.npy", mode="w+", dtype=np.float32, shape=shape)
    return ids, sims


def _finish_grown(
    tmp: Path, ids, sims, base: NeighbourGraph, store: EmbeddingStore, count: int, grown: int, started, **more
) -> None:
    """Flush a grown graph's arrays and write its manifest: the base's, with what grew."""
    ids.flush()
    sims.flush()
    manifest = {
        **base.manifest,
        "count": count,
        "store": store.uri,
        "grown_from": base.uri,
        "grown_rows": grown,
        **more,
        "build_seconds": time.perf_counter() - started,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def extend_neighbour_graph(
    base: NeighbourGraph,
    index: faiss.Index,
    store: EmbeddingStore,
    row_ids: np.ndarray,
    out_dir: str | Path,
    *,
    reverse: int = 2,
    add: bool = True,
    progress: bool = True,
) -> NeighbourGraph:
    """The graph of ``row_ids`` from the base graph and the approximate index (IVF, HNSW) it was
    built with, the new rows added to that index (``add``; without it, the index holds them
    already: a published index extended by its own step): its trained quantizer is kept, nothing
    is trained or rebuilt.

    Each new row's list is one query of the grown index, as in a rebuild. An old row's list
    changes only where a new row beats its k-th similarity; those old rows are found from the new
    rows' side (reverse kNN): the old rows among each new row's ``reverse`` x k nearest, each
    merged with the new rows that beat its list. Cost: a query per new row and a copy of the lists,
    against a query per row for a rebuild. It is as approximate as the index: an old row whose new
    neighbour does not list it among its ``reverse`` x k nearest keeps its list (recall measured in
    docs/BENCHMARKS.md, "Growing data"). For an exact index use :func:`grow_neighbour_graph`.

    Args:
        base: the graph of the previous rows (a subset of ``row_ids``), built with ``index``.
        index: the index over the base's rows; the new rows are added to it (it is changed); with
            ``add`` false, the index over every row of ``row_ids``.
        store: the vectors of every row.
        row_ids: the rows to cover.
        out_dir: the graph directory to write (atomically).
        reverse: how many times k neighbours of each new row are looked at for old rows to update.
        add: add the new rows to ``index`` first.
        progress: show a progress bar.
    """
    started = time.perf_counter()
    k = base.k
    row_ids, old, new = _old_and_new(base, row_ids)
    expected = len(old) if add else len(row_ids)
    if index.ntotal != expected:
        raise SealsError(f"{base.uri}: the index holds {index.ntotal:,} rows, not the {expected:,} expected")
    x_new = store.vectors(new)
    if add:
        index.add_with_ids(x_new, new)
    D, I = search(index, x_new, reverse * k, new)
    new_sims, new_ids = D[:, :k], I[:, :k]
    # Reverse kNN: (old row, similarity, new row) for every old row near a new one.
    near = (I >= 0) & ~np.isin(I, new)
    owner, sim, source = I[near], D[near], np.broadcast_to(new[:, None], I.shape)[near]
    order = np.argsort(owner, kind="stable")
    owner, sim, source = owner[order], sim[order], source[order]
    owners = sorted_unique(owner)
    listed_sims, listed_ids = base.knn(owners, k)
    listed_sims, listed_ids = np.array(listed_sims), np.array(listed_ids, np.int64)
    beats = sim > listed_sims[np.searchsorted(owners, owner), -1]
    changed, more = _entries(owner[beats], sim[beats], source[beats]) if beats.any() else (owners[:0], None)
    if more is not None:
        at = np.searchsorted(owners, changed)
        listed_sims, listed_ids = _merge((listed_sims[at], listed_ids[at]), more, k)
    with atomic_dir(out_dir, GRAPH_FORMAT) as tmp:
        ids, sims = _grown_arrays(tmp, base, store, row_ids)
        at_old = np.searchsorted(row_ids, old)
        chunk = 65_536
        with tqdm(total=len(old), desc=f"kNN graph k={k}, extend", unit="row", disable=not progress) as bar:
            for start in range(0, len(old), chunk):  # the old lists, copied
                where = at_old[start : start + chunk]
                sims[where] = base._sims[start : start + chunk]
                ids[where] = base._ids[start : start + chunk]
                bar.update(len(where))
        if len(changed):
            where = np.searchsorted(row_ids, changed)
            sims[where], ids[where] = listed_sims, listed_ids
        at_new = np.searchsorted(row_ids, new)
        sims[at_new], ids[at_new] = new_sims, new_ids
        more = {"index": describe_index(index), "updated_rows": len(changed)}
        _finish_grown(tmp, ids, sims, base, store, len(row_ids), len(new), started, **more)
    return NeighbourGraph.open(out_dir)
