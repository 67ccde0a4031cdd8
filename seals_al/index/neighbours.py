"""Where the candidate pool gets neighbour lists: a *neighbour source*.

Either the live index (:class:`IndexNeighbours`, one faiss query per pick) or a
:class:`NeighbourGraph`, the k neighbours of every row of U computed once with batched queries and
memory-mapped. Both return the same lists for the same index; the graph turns each pick's query
into an O(1) read: one kNN structure over U, amortized over every round and concept. Also here:
the kNN density that information density weighs entropy with.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from tqdm import tqdm

from seals_al.arrays import ArrayFile, NpyWriter, gather, sample_of, sorted_unique
from seals_al.errors import SealsError
from seals_al.index.build import due_for_training, search
from seals_al.published import (
    Folder,
    LocalFolder,
    materialize,
    materialize_if_published,
    open_folder,
    output_folder,
)
from seals_al.storage.files import atomic_dir, atomic_path, parse_manifest, write_json_atomic
from seals_al.store import EmbeddingStore, RowLookup


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


GRAPH_FORMAT = "seals-knn-graph/1"
ROWS_SAMPLE = "row_ids.sample.npy"  # the sorted rows' sparse sample: which block to read
PRELOAD = ("manifest.json", ROWS_SAMPLE)  # read with a published graph's listing, in one batch
# A published graph's rows again, each with its vector and kNN density beside its list, and where
# each neighbour's own record is: a round reading the graph on object storage gets an arrival's
# vector and its own list in one read. The records are in an order that keeps near rows near (by
# the index's inverted lists), so the arrivals of one pick, which are near each other, are mostly
# a few ranges rather than one request each; RECORD_OF says where each graph row's record is.
RECORDS = "records.npy"
RECORD_OF = "record_of.npy"


def records_dtype(dim: int, k: int, id_type: np.dtype) -> np.dtype:
    """One row of :data:`RECORDS`: its id, kNN density, vector, neighbour ids and the positions of
    the neighbours' own records (-1 where the list is padded). Ids are ``id_type``: 4 bytes when
    every row id fits (a smaller record: more of a pick's arrivals in one range)."""
    return np.dtype(
        [
            ("row", id_type),
            ("density", "<f4"),
            ("vector", "<f4", (dim,)),
            ("neighbours", id_type, (k,)),
            ("positions", "<i4", (k,)),
        ]
    )


def locality_order(index: faiss.Index, rows: np.ndarray) -> np.ndarray | None:
    """The graph's positions (of the sorted ``rows``) in an order that keeps near rows near: by
    the index's inverted list, the lists one after another nearest centroid first, each list's
    rows in row-id order. None for an index without inverted lists (the records then keep the
    graph's order)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    rows = np.asarray(rows, np.int64)
    list_of = np.full(len(rows), ivf.nlist, np.int64)  # rows in no list go last
    invlists = ivf.invlists
    for number in range(ivf.nlist):
        size = invlists.list_size(number)
        if not size:
            continue
        pointer = invlists.get_ids(number)
        ids = faiss.rev_swig_ptr(pointer, size).astype(np.int64)
        invlists.release_ids(number, pointer)
        at = np.minimum(np.searchsorted(rows, ids), len(rows) - 1)
        found = rows[at] == ids
        list_of[at[found]] = number
    try:
        centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    except RuntimeError:  # a quantizer that cannot give its centroids back: lists in their order
        centroids = None
    rank = np.arange(ivf.nlist + 1)
    if centroids is not None:
        rank[_chain(centroids)] = np.arange(ivf.nlist)
    return np.lexsort((np.arange(len(rows)), rank[list_of]))


def _chain(points: np.ndarray) -> np.ndarray:
    """The points in the order of a walk that always steps to the nearest point not visited yet."""
    points = np.asarray(points, np.float32)
    squares = (points * points).sum(axis=1)
    left = np.ones(len(points), bool)
    order = np.empty(len(points), np.int64)
    at = 0
    for step in range(len(points)):
        order[step] = at
        left[at] = False
        if step + 1 < len(points):
            distance = squares - 2 * (points @ points[at])  # |p - q|^2 less |q|^2
            distance[~left] = np.inf
            at = int(distance.argmin())
    return order


def write_records(
    graph: Path,
    store: EmbeddingStore,
    order: np.ndarray | None = None,
    *,
    chunk_rows: int = 16_384,
    progress: bool = True,
) -> None:
    """Write :data:`RECORDS` and :data:`RECORD_OF` into a graph folder whose lists are written,
    the records in ``order`` (the graph's positions; default: its own order), a chunk at a time."""
    rows = np.load(graph / "row_ids.npy", mmap_mode="r")
    ids = np.load(graph / "neighbours.npy", mmap_mode="r")
    sims = np.load(graph / "similarities.npy", mmap_mode="r")
    n = len(rows)
    order = np.arange(n) if order is None else np.asarray(order, np.int64)
    record_of = np.empty(n, np.int64)
    record_of[order] = np.arange(n)
    every = np.asarray(rows, np.int64)
    id_type = np.dtype("<i4") if n and int(every.max()) < 2**31 else np.dtype("<i8")
    dtype = records_dtype(store.dim, ids.shape[1], id_type)
    out = np.lib.format.open_memmap(graph / RECORDS, mode="w+", dtype=dtype, shape=(n,))
    with tqdm(total=n, desc="kNN graph records", unit="row", disable=not progress) as bar:
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            at = order[start:stop]
            block = out[start:stop]
            lists = np.asarray(ids[at])
            block["row"] = every[at]
            block["density"] = neighbour_density(np.asarray(sims[at]))
            block["vector"] = store.vectors(every[at])
            block["neighbours"] = lists
            graph_at = np.minimum(np.searchsorted(every, lists), n - 1)
            listed = (lists >= 0) & (every[graph_at] == lists)
            block["positions"] = np.where(listed, record_of[graph_at], -1)
            bar.update(stop - start)
    out.flush()
    del out
    np.save(graph / RECORD_OF, record_of.astype(np.int32 if n < 2**31 else np.int64))


class NeighbourGraph:
    """The k neighbours (ids and similarities) of every row of U, rows sorted by id; memory-mapped,
    or read by rows (on this machine's disk or where it is published on gs://)."""

    def __init__(
        self,
        folder: Folder,
        manifest: dict,
        row_ids: np.ndarray | ArrayFile,
        ids: np.ndarray | ArrayFile,
        sims: np.ndarray | ArrayFile,
        sample: np.ndarray | None = None,
        records: ArrayFile | None = None,
        record_of: ArrayFile | None = None,
    ):
        self.folder = folder
        self.uri = folder.uri
        self.manifest = manifest
        self.k = int(manifest["k"])
        self._row_ids = row_ids
        self._ids = ids
        self._sims = sims
        self._records = records
        self._record_of = record_of
        self._lists: dict[int, np.ndarray] = {}  # row id -> its list, read ahead (prefetch, records)
        self._positions: dict[int, int] = {}  # row id -> its record, known from a list read
        # The rows are sorted by the format (the builder sorts them): nothing is read to check it.
        self._lookup = RowLookup.presorted(
            row_ids, None, self.uri, "row id {} is not in the graph", sample=sample
        )

    @property
    def path(self) -> Path:
        """The graph's directory on this machine (a graph read on gs:// has none)."""
        if self.folder.local is None:
            raise SealsError(f"{self.uri}: read where it is published, not from a local folder")
        return self.folder.local

    @classmethod
    def open(
        cls, path: str | Path | Folder, in_memory: bool = False, access: str = "mapped"
    ) -> NeighbourGraph:
        """Open a graph.

        Args:
            path: the graph directory, or a folder (:func:`seals_al.published.open_folder`: a
                published graph on gs:// is read by range).
            in_memory: copy its row ids and neighbour lists into RAM (the similarities, needed
                only for information density, stay mapped; a local graph).
            access: otherwise, how its arrays are read (:data:`seals_al.arrays.ACCESS`): ``rows``
                reads only the lists asked for (a one-round process), ``mapped`` maps them.
        """
        folder = path if isinstance(path, Folder) else LocalFolder(path)
        if not folder.has("manifest.json"):
            raise SealsError(f"{folder.uri}: not a neighbour graph (no manifest.json)")
        manifest = parse_manifest(
            folder.read_bytes("manifest.json"), folder.where("manifest.json"), GRAPH_FORMAT
        )

        def lists(name: str) -> np.ndarray | ArrayFile:
            if in_memory and folder.local is not None:
                return np.load(folder.local / name, allow_pickle=False)
            return folder.array(name, access)

        sample = folder.array(ROWS_SAMPLE, "rows")[:] if folder.has(ROWS_SAMPLE) else None
        with_records = access == "rows" and folder.has(RECORDS) and folder.has(RECORD_OF)
        return cls(
            folder,
            manifest,
            lists("row_ids.npy"),
            lists("neighbours.npy"),
            folder.array("similarities.npy", "mapped" if in_memory else access),
            sample,
            folder.array(RECORDS, "rows") if with_records else None,
            folder.array(RECORD_OF, "rows") if with_records else None,
        )

    def use_lookup(self, lookup: RowLookup) -> None:
        """Find rows with ``lookup`` instead of searching the graph's row ids (a caller that knows
        the rows are 0..n-1 but some: nothing is read to find a row)."""
        self._lookup = lookup

    def prefetch(self, row_ids: np.ndarray) -> None:
        """Read these rows' neighbour lists now, in one batch, for :meth:`ids` to answer later
        without a read (the likely picks of a selection, on object storage)."""
        row_ids = [r for r in np.asarray(row_ids, np.int64).tolist() if r not in self._lists]
        if not row_ids or not isinstance(self._ids, ArrayFile):
            return
        if self._records is not None:  # with the records: where their neighbours' records are too
            self.records_of(np.asarray(row_ids, np.int64))
            return
        lists = np.asarray(self._ids[self._lookup(np.asarray(row_ids, np.int64))], np.int64)
        self._lists.update(zip(row_ids, lists, strict=True))

    @property
    def has_records(self) -> bool:
        """Whether each row's vector and kNN density are read with its list (:meth:`records_of`)."""
        return self._records is not None

    def records_of(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, kNN densities) of rows, read with their neighbour lists in one batch
        (:data:`RECORDS`); the lists are kept, so a row picked later needs no read of its own."""
        if self._records is None or self._record_of is None:
            raise SealsError(f"{self.uri}: this graph has no {RECORDS}")
        row_ids = np.asarray(row_ids, np.int64)
        where = np.asarray([self._positions.get(r, -1) for r in row_ids.tolist()], np.int64)
        unknown = where < 0
        if unknown.any():  # not reached through a list read here: look its record up first
            where[unknown] = self._record_of[self._lookup(row_ids[unknown])]
        found = self._records[where]
        lists, positions = np.asarray(found["neighbours"], np.int64), found["positions"]
        self._lists.update(zip(row_ids.tolist(), lists, strict=True))
        listed = positions >= 0
        self._positions.update(zip(lists[listed].tolist(), positions[listed].tolist(), strict=True))
        return found["vector"], found["density"]

    def __len__(self) -> int:
        return len(self._row_ids)

    def knn(
        self, row_ids: np.ndarray, k: int, vectors: VectorsOf | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        at = self._rows(row_ids, k)
        if isinstance(self._sims, ArrayFile) and isinstance(self._ids, ArrayFile):
            sims, ids = gather([(self._sims, at), (self._ids, at)])  # one batch of reads
            return sims[:, :k], ids[:, :k]
        return self._sims[at][:, :k], self._ids[at][:, :k]

    def ids(self, row_ids: np.ndarray, k: int, vectors: VectorsOf | None = None) -> np.ndarray:
        """Only the neighbour ids: the similarities (memory-mapped) are not read."""
        row_ids = np.asarray(row_ids, np.int64)
        if self._records is not None:  # with the records: where their neighbours' records are too
            self.prefetch(row_ids)
        if self._lists and all(r in self._lists for r in row_ids.tolist()):
            if k > self.k:
                raise SealsError(
                    f"{self.uri}: the graph holds {self.k} neighbours per row; {k} were asked for"
                )
            return np.stack([self._lists[r] for r in row_ids.tolist()])[:, :k]
        at = self._rows(row_ids, k)
        return self._ids[at] if k == self.k else self._ids[at][:, :k]

    def _rows(self, row_ids: np.ndarray, k: int) -> np.ndarray:
        """Where the given rows are in the graph; an unknown row or a k over the graph's is an error."""
        if k > self.k:
            raise SealsError(f"{self.uri}: the graph holds {self.k} neighbours per row; {k} were asked for")
        return self._lookup(row_ids)


def build_neighbour_graph(
    index: faiss.Index,
    store: EmbeddingStore,
    row_ids: np.ndarray,
    k: int,
    out_dir: str | Path,
    *,
    chunk_rows: int = 4096,
    progress: bool = True,
) -> NeighbourGraph:
    """Query the index once for every row and write the neighbour lists (atomic directory publish).

    Args:
        index: the index over U.
        store: the rows' vectors.
        row_ids: the rows to cover (normally U).
        k: neighbours per row, the query itself excluded.
        out_dir: the graph directory; replaced whole if it exists.
        chunk_rows: rows per batched query.
        progress: show a progress bar.

    Returns:
        The graph, opened (memory-mapped).
    """
    row_ids = np.sort(np.asarray(row_ids, dtype=np.int64))

    def lists() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(row_ids), chunk_rows):
            rows = row_ids[start : start + chunk_rows]
            yield search(index, store.vectors(rows), k, rows)

    return write_graph(out_dir, store, row_ids, k, _describe(index), lists(), progress=progress)


def write_graph(
    out_dir: str | Path,
    store: EmbeddingStore,
    row_ids: np.ndarray,
    k: int,
    index: str,
    lists: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    progress: bool = True,
) -> NeighbourGraph:
    """Write a graph's files (atomic directory publish) from its lists, (similarities, ids) of the
    sorted ``row_ids`` a chunk at a time, in order: whoever computed them (this process, or Beam
    workers: :mod:`seals_al.index.graph_pipeline`). ``index``: the index's description."""
    started = time.perf_counter()
    with atomic_dir(out_dir, GRAPH_FORMAT) as tmp:
        np.save(tmp / "row_ids.npy", row_ids)
        np.save(tmp / ROWS_SAMPLE, sample_of(row_ids))
        shape = (len(row_ids), k)
        # int32 ids when every row id of the store (so every possible neighbour) fits; -1 pads
        # short lists. Half the size: a 10M x 100 graph's lists fit in 4 GB of RAM.
        fits = len(store) == 0 or int(store.row_ids.max()) <= np.iinfo(np.int32).max
        id_type = np.int32 if fits else np.int64
        with (
            NpyWriter(tmp / "neighbours.npy", id_type, shape) as ids,
            NpyWriter(tmp / "similarities.npy", np.float32, shape) as sims,
            tqdm(total=len(row_ids), desc=f"kNN graph k={k}", unit="row", disable=not progress) as bar,
        ):
            for D, I in lists:
                if I.shape != D.shape:
                    raise SealsError(f"{out_dir}: ids of shape {I.shape} for similarities of shape {D.shape}")
                sims.write(D)
                ids.write(I)
                bar.update(len(D))
        manifest = {
            "format": GRAPH_FORMAT,
            "k": k,
            "count": len(row_ids),
            "index": index,
            "store": store.uri,
            "trained_on_rows": len(row_ids),  # kept by a grown graph: when to train again
            "build_seconds": time.perf_counter() - started,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return NeighbourGraph.open(out_dir)


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
        more = {"index": _describe(index), "updated_rows": len(changed)}
        _finish_grown(tmp, ids, sims, base, store, len(row_ids), len(new), started, **more)
    return NeighbourGraph.open(out_dir)


def cached_neighbour_graph(
    index: Callable[[], faiss.Index],
    store: EmbeddingStore,
    row_ids: Callable[[], np.ndarray],
    rows_sha256: str,
    factory: str,
    k: int,
    cache_dir: Path,
    progress: bool = True,
    access: str = "mapped",
    published: str | None = None,
    keep_index: bool = True,
    base_of: Callable[[], tuple[str, str, str] | None] | None = None,
    scan: Callable[[], EmbeddingStore] | None = None,
) -> NeighbourGraph:
    """The graph of these rows for this store, factory and k: opened from ``cache_dir/graphs`` if
    an earlier run built it, else built and cached. ``index`` and ``row_ids`` are called only to
    build; ``rows_sha256`` is :func:`~seals_al.store.rows_digest` of the rows, known beforehand;
    ``access`` as for :meth:`NeighbourGraph.open`.

    With ``published`` (a gs:// folder, e.g. beside a gs:// index), the graph is shared between
    machines: read from ``published/k<k>-<key>`` (materialized in the cache) when some task
    published it there, else built here and published, so the graph is built once per cluster,
    not once per pod. ``base_of`` gives (rows digest, store digest, factory) of the index this
    one was extended from (:func:`seals_al.index.directory.extend_index_dir`), if any: that index's
    graph (published, or in this cache) is then grown, not built again.

    On this machine's cache, a graph over a store that was appended to (a data version that only
    added items) is grown from the base store's graph, not built again: extended through the
    base's saved approximate index (:func:`extend_neighbour_graph`; ``keep_index`` saves an
    approximate index beside the graph it builds), or else by the exact pass
    (:func:`grow_neighbour_graph`). Once U has grown by more than
    :data:`~seals_al.settings.RETRAIN_GROWTH` since that index was trained, the index is trained
    and the graph built again instead. ``scan`` gives the store to read every row from when a
    graph is built or grown (a published store copied to this machine first; default ``store``).
    """
    name = _name(rows_sha256, store.digest(), factory, k)

    def whole() -> EmbeddingStore:
        return scan() if scan is not None else store

    if published is not None:
        uri = published_graph(published, k, name)
        folder = open_folder(uri, cache_dir, PRELOAD)  # this cache's copy, else read where it is
        if folder is None:
            base = _published_base(published, base_of, k, cache_dir, progress)
            with output_folder(uri, GRAPH_FORMAT, cache_dir, progress) as out:
                _grow_or_build(base, index, whole(), row_ids(), k, out, progress)
                rows = np.load(out / "row_ids.npy")
                write_records(out, whole(), locality_order(index(), rows), progress=progress)
            folder = open_folder(uri, cache_dir)  # the cache has it now
        if access != "rows" and folder is not None and folder.local is None:
            folder = LocalFolder(materialize(uri, "a neighbour graph", cache_dir, progress))
        if folder is None:
            raise SealsError(f"{uri}: the neighbour graph published here is gone")
        return NeighbourGraph.open(folder, access=access)
    path = cached_graph(cache_dir, name)
    graphs = path.parent
    configured = None if (path / "manifest.json").is_file() or base_of is None else base_of()
    if configured is not None:  # a built index, extended from one whose graph may be here
        base_path = graphs / _name(*configured, k)
        base = NeighbourGraph.open(base_path) if (base_path / "manifest.json").is_file() else None
        _grow_or_build(base, index, whole(), row_ids(), k, path, progress)
    if not (path / "manifest.json").is_file():
        base = _covering(_graph_of_base_store(graphs, store, factory, k), row_ids())
        saved, superseded = None, None
        if base is not None:
            superseded = base.path / SAVED_INDEX  # the new graph's index, if any, replaces it
            saved = _saved_index(base.path)
            trained = int(base.manifest.get("trained_on_rows", 0))
            if saved is not None and due_for_training(store.dim, factory, len(row_ids()), trained):
                base = None  # grown too far from what the index was trained on: train it again
        if base is not None and saved is not None:
            # Approximate: the new rows added to the base's trained index.
            extend_neighbour_graph(base, saved, whole(), row_ids(), path, progress=progress)
            _save_index(saved, path)
        elif base is not None:  # exact, or the base's index is not here: every old row against the new
            grow_neighbour_graph(base, whole(), row_ids(), path, progress=progress)
        else:
            built = index()
            build_neighbour_graph(built, whole(), row_ids(), k, path, progress=progress)
            if keep_index and not _is_exact(built):
                _save_index(built, path)
        if superseded is not None:
            superseded.unlink(missing_ok=True)
        write_json_atomic(_lineage(graphs, store.digest(), factory, k), {"graph": name})
    return NeighbourGraph.open(path, access=access)


def graphs_of_index(index_uri: str) -> str:
    """Where the graphs over a gs:// index are published: its ``graphs/`` folder, which the
    index's own listing does not name."""
    return f"{str(index_uri).rstrip('/')}/graphs"


def published_graph(published: str, k: int, name: str) -> str:
    """Where the graph called ``name`` (:func:`_name`) is published under a graphs folder."""
    return f"{published.rstrip('/')}/k{k}-{name}"


def cached_graph(cache_dir: str | Path, name: str) -> Path:
    """Where the graph called ``name`` is in this machine's cache."""
    return Path(cache_dir) / "graphs" / name


def index_key(manifest_sha256: str) -> str:
    """What a graph over a built index depends on besides its rows: the sha256 of the index's
    manifest (:func:`_name`'s ``factory``)."""
    return "index " + manifest_sha256


def _name(rows_sha256: str, store_digest: str, factory: str, k: int) -> str:
    """A graph's name: what it depends on (its rows, the store, the factory or index, k)."""
    return hashlib.sha256(f"{rows_sha256}\n{store_digest}\n{factory}\n{k}".encode()).hexdigest()[:24]


def _grow_or_build(
    base: NeighbourGraph | None,
    index: Callable[[], faiss.Index],
    store: EmbeddingStore,
    row_ids: np.ndarray,
    k: int,
    out: Path,
    progress: bool,
) -> None:
    """The graph of a built index: grown from ``base`` (the graph of the index this one was
    extended from) when every base row is still here (the exact pass for a Flat index, else
    extended through the index, which holds the new rows already); else built."""
    base = _covering(base, row_ids)
    if base is None:
        build_neighbour_graph(index(), store, row_ids, k, out, progress=progress)
    elif str(base.manifest.get("index", "")).startswith("IndexFlat"):
        grow_neighbour_graph(base, store, row_ids, out, progress=progress)
    else:
        extend_neighbour_graph(base, index(), store, row_ids, out, add=False, progress=progress)


def _covering(base: NeighbourGraph | None, row_ids: np.ndarray) -> NeighbourGraph | None:
    """``base`` when every one of its rows is still among ``row_ids`` (a graph to grow from);
    None when rows left."""
    if base is None or not np.isin(np.asarray(base._row_ids[:]), row_ids).all():
        return None
    return base


def _published_base(
    published: str, base_of: Callable[[], tuple[str, str, str] | None] | None, k: int, cache_dir, progress
) -> NeighbourGraph | None:
    """The published graph of the index this one was extended from, when there is one."""
    base = base_of() if base_of is not None else None
    if base is None:
        return None
    path = materialize_if_published(published_graph(published, k, _name(*base, k)), cache_dir, progress)
    return None if path is None else NeighbourGraph.open(path)


SAVED_INDEX = "index.faiss"  # in a cached graph's folder: the approximate index it was built with


def _is_exact(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return isinstance(inner, faiss.IndexFlat)


def _save_index(index: faiss.Index, graph: Path) -> None:
    """Keep the index an approximate graph was built with beside it in this machine's cache (faiss's
    own format, never read from shared storage), so the next data version extends both."""
    with atomic_path(graph / SAVED_INDEX) as tmp:
        faiss.write_index(index, str(tmp))


def _saved_index(graph: Path) -> faiss.Index | None:
    """The index saved beside a cached graph, or None (exact, built elsewhere, or pruned)."""
    path = graph / SAVED_INDEX
    if not path.is_file():
        return None
    try:
        return faiss.read_index(str(path))
    except RuntimeError:  # cut short: the exact pass is used instead
        return None


def _lineage(graphs: Path, store_digest: str, factory: str, k: int) -> Path:
    """Which cached graph (of this factory and k) was built over the store with this digest."""
    key = hashlib.sha256(f"{store_digest}\n{factory}\n{k}".encode()).hexdigest()[:24]
    return graphs.parent / "lineage" / "graphs" / f"{key}.json"  # beside graphs/, which holds only graphs


def _graph_of_base_store(graphs: Path, store: EmbeddingStore, factory: str, k: int) -> NeighbourGraph | None:
    """The cached graph over the store this one was appended to (seals_al.embed.local), if any."""
    base = store.manifest.get("extra", {}).get("appended_to")
    record = _lineage(graphs, base, factory, k) if base else None
    if record is None or not record.is_file():
        return None
    try:
        return NeighbourGraph.open(graphs / json.loads(record.read_text())["graph"])
    except (SealsError, OSError, ValueError, KeyError, TypeError):
        return None


def _describe(index: faiss.Index) -> str:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return f"{type(inner).__name__} ntotal={index.ntotal} d={index.d}"


def as_neighbours(source: faiss.Index | Neighbours) -> Neighbours:
    """Accept a faiss index (queried live) or any neighbour source such as a graph."""
    return IndexNeighbours(source) if isinstance(source, faiss.Index) else source
