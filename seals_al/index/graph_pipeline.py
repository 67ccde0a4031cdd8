"""The neighbour graph as an Apache Beam pipeline: the k nearest neighbours of every row of U,
queried by workers that share nothing but object storage.

Each worker opens the published index (copied once into its own cache) and the published store
(read by ranges, only its rows) once, in ``setup``, as a ModelHandler loads a model; an element
is a range of U's sorted rows, whose lists the worker writes as two ``.npy`` files into a work
folder (gs:// or a folder every worker sees). The driver then reads the parts in order and writes
the graph's files as the one-process build does (:func:`~seals_al.index.graph.write_graph`):
given the same index, the graph is the same, row for row.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import apache_beam as beam
import faiss
import numpy as np

from seals_al.beam_options import runner_options
from seals_al.errors import SealsError
from seals_al.index.graph import NeighbourGraph, write_graph

CHUNK_ROWS = 4096  # rows queried at once, as the one-process build does


def _part(number: int, what: str) -> str:
    return f"part-{number:06d}.{what}.npy"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class QueryRows(beam.DoFn):
    """(range number, row ids) -> that range's lists, written into the work folder; yields the
    number. The index and the store are opened once per worker."""

    def __init__(self, index_uri: str, store_uri: str, k: int, work_dir: str):
        self.index_uri, self.store_uri, self.k, self.work_dir = index_uri, store_uri, k, work_dir
        self.rows = beam.metrics.Metrics.counter("seals", "graph_rows_queried")

    def setup(self) -> None:
        from seals_al.index.directory import open_index_dir
        from seals_al.published import materialize
        from seals_al.storage import open_storage
        from seals_al.storage.uris import default_cache_dir
        from seals_al.store import EmbeddingStore

        cache = default_cache_dir()
        self.index = open_index_dir(materialize(self.index_uri, "an index directory", cache, progress=False))
        self.store = EmbeddingStore.published(self.store_uri, cache)
        self.out = open_storage(self.work_dir)

    def process(self, element: tuple[int, bytes]) -> Iterator[int]:
        from seals_al.index.build import search

        number, rows = element[0], np.frombuffer(element[1], "<i8")
        D, I = search(self.index, self.store.vectors(rows), self.k, rows)
        self.out.write_bytes(_part(number, "sims"), _npy(np.asarray(D, np.float32)))
        self.out.write_bytes(_part(number, "ids"), _npy(np.asarray(I, np.int64)))
        self.rows.inc(len(rows))
        yield number


def graph_with_beam(
    index_uri: str,
    store_uri: str,
    row_ids: np.ndarray,
    k: int,
    out_dir: str | Path,
    work_dir: str,
    *,
    chunk_rows: int = CHUNK_ROWS,
    beam_args: Sequence[str] = (),
    test_pipeline: beam.Pipeline | None = None,
    progress: bool = True,
    index: faiss.Index | None = None,
) -> NeighbourGraph:
    """The neighbour graph of ``row_ids`` for k, its queries run on Beam workers.

    Args:
        index_uri: the published index over the rows (a folder or gs://).
        store_uri: the published store of their vectors (a folder or gs://).
        row_ids: the rows to cover (normally U).
        k: neighbours per row, the query itself excluded.
        out_dir: the graph folder on this machine; replaced whole if it exists.
        work_dir: an empty folder (or gs:// prefix) every worker can write, for the parts.
        chunk_rows: rows in one element (one batched query).
        beam_args: Beam pipeline options (default: the in-process FnApiRunner).
        test_pipeline: a pipeline to run on instead (tests).
        progress: a progress bar while the parts are assembled.
        index: the index at ``index_uri``, when the caller has it open (else opened here, for
            the graph's description).
    """
    from seals_al.index.directory import open_index_dir
    from seals_al.index.neighbours import describe_index
    from seals_al.published import materialize
    from seals_al.storage import open_storage
    from seals_al.store import EmbeddingStore

    if chunk_rows < 1:
        raise SealsError(f"chunk_rows must be at least 1, got {chunk_rows}")
    paths = {"the index": index_uri, "the store": store_uri, "the work folder": work_dir}
    options = runner_options(beam_args, paths)  # workers elsewhere and a path only here: refused now
    # What the workers will open, opened here first: a missing store or index fails now, naming it.
    store = EmbeddingStore.published(store_uri)
    if index is None:
        index = open_index_dir(materialize(index_uri, "an index directory", progress=progress))
    description = describe_index(index)
    row_ids = np.sort(np.asarray(row_ids, dtype=np.int64))
    # Each range's row ids as little-endian int64 bytes: 8 bytes a row (32 KiB an element), and
    # an element crosses to the workers without pickling.
    ranges = [
        (n, row_ids[s : s + chunk_rows].astype("<i8").tobytes())
        for n, s in enumerate(range(0, len(row_ids), chunk_rows))
    ]
    with test_pipeline or beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Ranges" >> beam.Create(ranges)
            | "Spread" >> beam.Reshuffle()  # ranges go to every worker, not the first one
            | "Query" >> beam.ParDo(QueryRows(index_uri, store_uri, k, work_dir))
        )
    parts = open_storage(work_dir)

    def lists() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for number, _ in ranges:
            sims = np.load(io.BytesIO(parts.read_bytes(_part(number, "sims"))), allow_pickle=False)
            ids = np.load(io.BytesIO(parts.read_bytes(_part(number, "ids"))), allow_pickle=False)
            yield sims, ids

    return write_graph(out_dir, store, row_ids, k, description, lists(), progress=progress)


def publish_graph(
    index_uri: str,
    store_uri: str,
    k: int,
    *,
    rows: np.ndarray | None = None,
    beam_args: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    progress: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> str:
    """Build the graph of every row of the store for k, its queries on Beam workers, and put it
    where a round over this index finds it instead of building it: under a gs:// index's
    ``graphs/`` folder, with the records a round on any pod reads by range; for a local index,
    in this machine's cache (where a round on this machine looks). Returns where it is.

    ``rows``: U's row ids (default: every row of the store, what ``build-index`` indexes). A
    round finds the graph when its U is these rows, its index is ``index_uri`` and its k is
    ``k``: it is named as :func:`~seals_al.index.graph_cache.cached_neighbour_graph` names it. One
    published (or cached) already is kept, not built again.
    """
    import hashlib

    from seals_al.folders import open_folder
    from seals_al.index.directory import open_index_dir, read_index_manifest
    from seals_al.index.graph import GRAPH_FORMAT, locality_order, write_records
    from seals_al.index.graph_cache import _name, cached_graph, graphs_of_index, index_key, published_graph
    from seals_al.published import materialize, output_folder
    from seals_al.storage import work_folder
    from seals_al.storage.uris import default_cache_dir, is_remote
    from seals_al.store import EmbeddingStore, rows_digest

    if k < 1:
        raise SealsError(f"--graph-k must be at least 1, got {k}")
    cache = Path(cache_dir or default_cache_dir())
    key = index_key(hashlib.sha256(read_index_manifest(index_uri, cache)).hexdigest())
    store = EmbeddingStore.published(store_uri, cache)
    rows = np.sort(np.asarray(store.row_ids if rows is None else rows, np.int64))
    if k >= len(rows):
        raise SealsError(
            f"--graph-k {k}: the store has {len(rows):,} rows, so at most {len(rows) - 1:,} neighbours"
        )
    name = _name(rows_digest(rows), store.digest(), key, k)
    # Where a round looks (as cached_neighbour_graph does): beside a gs:// index, else this cache.
    graphs = graphs_of_index(index_uri) if is_remote(index_uri) else None
    target = published_graph(graphs, k, name) if graphs else str(cached_graph(cache, name))
    if (open_folder(target, cache) is not None) if graphs else (Path(target) / "manifest.json").is_file():
        return target  # built (and published) before: the same rows, store, index and k
    index = open_index_dir(materialize(index_uri, "an index directory", cache, progress))
    with (
        work_folder(graphs or cache, cache) as work,
        output_folder(target, GRAPH_FORMAT, cache, progress) as out,
    ):
        graph_with_beam(
            index_uri, store_uri, rows, k, out, work, beam_args=beam_args, progress=progress,
            test_pipeline=test_pipeline, index=index,
        )  # fmt: skip
        if graphs:  # a round on another pod reads the arrivals' records by range
            scan = store.local_copy(cache, progress)
            write_records(out, scan, locality_order(index, rows), progress=progress)
    return target
