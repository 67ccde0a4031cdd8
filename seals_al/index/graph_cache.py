"""Which neighbour graph a data version uses: found in the cache or published beside its index,
grown from its store's earlier graph, or built; and where graphs are kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from seals_al.errors import SealsError
from seals_al.folders import LocalFolder, open_folder
from seals_al.index.build import due_for_training
from seals_al.index.graph import (
    GRAPH_FORMAT,
    PRELOAD,
    NeighbourGraph,
    build_neighbour_graph,
    locality_order,
    write_records,
)
from seals_al.index.graph_growth import extend_neighbour_graph, grow_neighbour_graph
from seals_al.published import materialize, materialize_if_published, output_folder
from seals_al.storage.files import atomic_path, write_json_atomic
from seals_al.store import EmbeddingStore


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
