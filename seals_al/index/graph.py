"""The neighbour graph: the k neighbours of every row of U, computed once with batched queries,
stored as records in locality order and memory-mapped (or read by range where it is published).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from seals_al.arrays import ArrayFile, NpyWriter, gather, sample_of
from seals_al.errors import SealsError
from seals_al.folders import Folder, LocalFolder
from seals_al.index.build import search
from seals_al.index.neighbours import VectorsOf, describe_index, neighbour_density
from seals_al.storage.files import atomic_dir, parse_manifest
from seals_al.store import EmbeddingStore, RowLookup

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

    return write_graph(out_dir, store, row_ids, k, describe_index(index), lists(), progress=progress)


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
