"""The faiss kNN index over the unlabeled set U, keyed by global int64 row ids, and the
precomputed neighbour graph built from it.

Small free functions in the style of faiss.contrib: build, and search returning (D, I).
Vectors are unit-norm and the metric is inner product, so D holds cosine similarities.

The candidate pool asks a *neighbour source* for neighbour lists: either the live index
(:class:`IndexNeighbours`, one faiss query per pick) or a :class:`NeighbourGraph`, the k
neighbours of every row of U computed once with batched queries and memory-mapped. Both return
the same lists for the same index; the graph turns each pick's query into an O(1) read, which is
the amortization of DESIGN section 1 (one kNN structure over U shared by all rounds and concepts).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from tqdm import tqdm

from seals_al.embeddings import EmbeddingStore, first_out_of_range
from seals_al.errors import SealsError
from seals_al.storage import atomic_dir, read_manifest, write_json_atomic

DEFAULT_FACTORY = "Flat"


def build_index(
    store: EmbeddingStore,
    row_ids: np.ndarray,
    factory: str = DEFAULT_FACTORY,
    *,
    train_size: int = 100_000,
    seed: int = 0,
    chunk_rows: int = 100_000,
    progress: bool = True,
) -> faiss.Index:
    """Build an index over the given rows of a store, keyed by their global row ids.

    Args:
        store: where the vectors come from.
        row_ids: the global ids of the rows to index (U); any order, gaps allowed.
        factory: a faiss index_factory string: "Flat", "IVF{n},Flat", "IVF{n},PQ{m}", "HNSW{M}", ...
        train_size: how many rows (sampled with ``seed``) train an index that needs training.
        seed: the sampling seed.
        chunk_rows: rows added per call, so vectors are gathered a chunk at a time.
        progress: show a progress bar while adding.

    Returns:
        An index whose search returns global row ids.
    """
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if len(row_ids) == 0:
        raise SealsError("cannot build an index over zero rows")
    index = empty_index(store.dim, factory)
    train(index, store, row_ids, train_size, seed)
    add_rows(index, store, row_ids, chunk_rows=chunk_rows, progress=progress, desc=f"index {factory}")
    return index


def empty_index(dim: int, factory: str) -> faiss.Index:
    """An empty index keyed by external ids: IVF indexes keep ids in their inverted lists (so
    shards can be merged); others are wrapped in an IndexIDMap2."""
    inner = check_factory(dim, factory)
    return inner if faiss.try_extract_index_ivf(inner) is not None else faiss.IndexIDMap2(inner)


def train(index: faiss.Index, store: EmbeddingStore, row_ids: np.ndarray, train_size: int, seed: int) -> None:
    """Train on a seeded sample of the rows, if the index needs training."""
    if index.is_trained:
        return
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(row_ids), size=min(train_size, len(row_ids)), replace=False))
    index.train(store.vectors(row_ids[sample]))


def add_rows(
    index: faiss.Index,
    store: EmbeddingStore,
    row_ids: np.ndarray,
    *,
    chunk_rows: int = 100_000,
    progress: bool = True,
    desc: str = "index",
) -> None:
    """Add rows a chunk at a time: only one chunk of vectors is in memory at once."""
    with tqdm(total=len(row_ids), desc=desc, unit="vec", disable=not progress) as bar:
        for start in range(0, len(row_ids), chunk_rows):
            ids = row_ids[start : start + chunk_rows]
            index.add_with_ids(store.vectors(ids), ids)
            bar.update(len(ids))


def check_factory(dim: int, factory: str) -> faiss.Index:
    """The empty index a factory string makes for this dimension; a bad string is an error."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise SealsError(f"invalid faiss factory string {factory!r}: {e}") from e


def set_search_parameters(index: faiss.Index, **params: float) -> None:
    """Set search-time parameters such as nprobe (IVF) or efSearch (HNSW) through the IDMap."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def search(index: faiss.Index, queries: np.ndarray, k: int, query_ids: np.ndarray | None = None):
    """k nearest neighbours of each query row, excluding the query's own id.

    Args:
        index: an index returned by :func:`build_index`.
        queries: float32 [n, dim].
        k: neighbours wanted per query.
        query_ids: the global id of each query (if it is in the index); that id is dropped from
            its own list, whatever position the search puts it at (duplicates may tie with it).

    Returns:
        (D, I): float32 similarities and int64 global ids, [n, k], best first. Rows with fewer
        than k neighbours are padded with D = -inf and I = -1.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise SealsError(f"query vectors have shape {queries.shape}; the index expects dimension {index.d}")
    extra = 0 if query_ids is None else 1
    D, I = _search(index, queries, k + extra)
    D[I < 0] = -np.inf  # faiss pads missing neighbours with -FLT_MAX, a finite number
    if query_ids is None:
        return D, I
    if len(queries) == 1:  # the per-pick path of selection: keep it lean
        keep = np.flatnonzero(I[0] != query_ids[0])[:k]
        if len(keep) == k:
            return D[:, keep], I[:, keep]
    keep = np.asarray(query_ids, dtype=np.int64)[:, None] != I
    # Keep the first k entries of each row that are not the query itself.
    keep &= np.cumsum(keep, axis=1) <= k
    out_D = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_I = np.full((len(queries), k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep)
    slot = np.cumsum(keep, axis=1)[rows, cols] - 1
    out_D[rows, slot] = D[rows, cols]
    out_I[rows, slot] = I[rows, cols]
    return out_D, out_I


# Below this many queries one OpenMP thread answers faster than several (measured: a single query
# on an 18k x 384 flat index takes 0.99 ms with one thread, 2.38 ms with two).
SINGLE_THREAD_BELOW = 8


def _search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(queries) >= SINGLE_THREAD_BELOW:
        return index.search(queries, k)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(threads)


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


class NeighbourGraph:
    """The k neighbours (ids and similarities) of every row of U, memory-mapped, rows sorted by id."""

    def __init__(self, path: Path, manifest: dict, row_ids: np.ndarray, ids: np.ndarray, sims: np.ndarray):
        self.path = path
        self.manifest = manifest
        self.k = int(manifest["k"])
        self._row_ids = row_ids
        self._ids = ids
        self._sims = sims
        # Rows are sorted and unique, so 0..n-1 end to end means row id == row: no search needed.
        n = len(row_ids)
        self._dense = n > 0 and int(row_ids[0]) == 0 and int(row_ids[-1]) == n - 1

    @classmethod
    def open(cls, path: str | Path, in_memory: bool = False) -> NeighbourGraph:
        """Open a graph memory-mapped (default), or with its row ids and neighbour lists read into
        RAM (``in_memory``); the similarities, needed only for information density, stay mapped."""
        path = Path(path)
        manifest = read_manifest(path, GRAPH_FORMAT, "a neighbour graph")

        def load(name: str, into_ram: bool) -> np.ndarray:
            return np.load(path / name, mmap_mode=None if into_ram else "r", allow_pickle=False).view(
                np.ndarray
            )

        return cls(
            path,
            manifest,
            load("row_ids.npy", in_memory),
            load("neighbours.npy", in_memory),
            load("similarities.npy", False),
        )

    def __len__(self) -> int:
        return len(self._row_ids)

    def knn(
        self, row_ids: np.ndarray, k: int, vectors: VectorsOf | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        at = self._rows(row_ids, k)
        return self._sims[at, :k], self._ids[at, :k]

    def ids(self, row_ids: np.ndarray, k: int, vectors: VectorsOf | None = None) -> np.ndarray:
        """Only the neighbour ids: the similarities (memory-mapped) are not read."""
        at = self._rows(row_ids, k)
        return self._ids[at] if k == self.k else self._ids[at, :k]

    def _rows(self, row_ids: np.ndarray, k: int) -> np.ndarray:
        """Where the given rows are in the graph; an unknown row or a k over the graph's is an error."""
        if k > self.k:
            raise SealsError(f"{self.path}: the graph holds {self.k} neighbours per row; {k} were asked for")
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if self._dense:
            bad = first_out_of_range(row_ids, len(self._row_ids))
            if bad is not None:
                raise SealsError(f"{self.path}: row id {bad} is not in the graph")
            return row_ids
        at = np.minimum(np.searchsorted(self._row_ids, row_ids), len(self._row_ids) - 1)
        missing = self._row_ids[at] != row_ids
        if missing.any():
            raise SealsError(
                f"{self.path}: row id {int(row_ids[np.flatnonzero(missing)[0]])} is not in the graph"
            )
        return at


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
    started = time.perf_counter()
    row_ids = np.sort(np.asarray(row_ids, dtype=np.int64))
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "row_ids.npy", row_ids)
        shape = (len(row_ids), k)
        # int32 ids when every row id of the store (so every possible neighbour) fits; -1 pads
        # short lists. Half the size: a 10M x 100 graph's lists fit in 4 GB of RAM.
        fits = len(store) == 0 or int(store.row_ids.max()) <= np.iinfo(np.int32).max
        id_type = np.int32 if fits else np.int64
        ids = np.lib.format.open_memmap(tmp / "neighbours.npy", mode="w+", dtype=id_type, shape=shape)
        sims = np.lib.format.open_memmap(tmp / "similarities.npy", mode="w+", dtype=np.float32, shape=shape)
        with tqdm(total=len(row_ids), desc=f"kNN graph k={k}", unit="row", disable=not progress) as bar:
            for start in range(0, len(row_ids), chunk_rows):
                rows = row_ids[start : start + chunk_rows]
                D, I = search(index, store.vectors(rows), k, rows)
                sims[start : start + len(rows)] = D
                ids[start : start + len(rows)] = I
                bar.update(len(rows))
        ids.flush()
        sims.flush()
        del ids, sims
        manifest = {
            "format": GRAPH_FORMAT,
            "k": k,
            "count": len(row_ids),
            "index": _describe(index),
            "store": str(store.path),
            "build_seconds": time.perf_counter() - started,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return NeighbourGraph.open(out_dir)


def cached_neighbour_graph(
    index: Callable[[], faiss.Index],
    store: EmbeddingStore,
    row_ids: np.ndarray,
    factory: str,
    k: int,
    cache_dir: Path,
    progress: bool = True,
) -> NeighbourGraph:
    """The graph of these rows for this store, factory and k: opened from ``cache_dir/graphs`` if
    an earlier run built it, else built (``index`` is called only then) and cached."""
    key = f"{rows_digest(row_ids)}\n{store_digest(store)}\n{factory}\n{k}"
    path = Path(cache_dir) / "graphs" / hashlib.sha256(key.encode()).hexdigest()[:24]
    if (path / "manifest.json").is_file():
        return NeighbourGraph.open(path)
    return build_neighbour_graph(index(), store, row_ids, k, path, progress=progress)


def _describe(index: faiss.Index) -> str:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return f"{type(inner).__name__} ntotal={index.ntotal} d={index.d}"


def as_neighbours(source: faiss.Index | Neighbours) -> Neighbours:
    """Accept a faiss index (queried live) or any neighbour source such as a graph."""
    return IndexNeighbours(source) if isinstance(source, faiss.Index) else source


# -- index directories: what `seals-al build-index` writes -----------------------------------------
INDEX_FORMAT = "seals-index/1"
LAYOUTS = ("single", "ondisk", "shards")


def build_index_dir(
    store: EmbeddingStore,
    out_dir: str | Path,
    factory: str = DEFAULT_FACTORY,
    *,
    row_ids: np.ndarray | None = None,
    layout: str = "single",
    shard_rows: int = 1_000_000,
    train_size: int = 100_000,
    search_params: dict[str, int] | None = None,
    recall_queries: int = 1000,
    k: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Build an index over every row of a store into a directory with a manifest.

    Layouts: ``single`` (one index file); ``ondisk`` (IVF only: one index per shard of rows, their
    inverted lists merged into ``index.ivfdata`` with faiss.contrib.ondisk and memory-mapped at
    query time, so the lists never need to fit in RAM); ``shards`` (one index per shard of rows,
    searched together with faiss.IndexShards, which merges each query's top k). The vectors are
    read a chunk at a time; IVF is trained once on a seeded sample and every shard reuses it.

    Args:
        store: the embeddings.
        out_dir: the index directory (replaced whole if it exists).
        factory: faiss index_factory string.
        row_ids: the rows to index, e.g. U without the evaluation split (default: every row).
        layout: single, ondisk or shards.
        shard_rows: rows per shard (ondisk and shards layouts).
        train_size: rows sampled to train IVF or PQ.
        search_params: recorded and applied when opened, e.g. {"nprobe": 16} or {"efSearch": 128}.
        recall_queries: rows sampled as queries to measure recall@k against exact search (0: skip).
        k: the k of recall@k.
        seed: sampling seed.
        progress: show progress bars.

    Returns:
        The manifest written to ``manifest.json``.
    """
    if layout not in LAYOUTS:
        raise SealsError(f"unknown index layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    search_params = dict(search_params or {})
    started = time.perf_counter()
    row_ids = store.row_ids if row_ids is None else np.sort(np.asarray(row_ids, dtype=np.int64))
    trained = empty_index(store.dim, factory)
    if layout == "ondisk" and faiss.try_extract_index_ivf(trained) is None:
        raise SealsError(f"the ondisk layout needs an IVF index; {factory!r} is not one")
    train(trained, store, row_ids, train_size, seed)
    with atomic_dir(out_dir) as tmp:
        files: list[str] = []
        if layout == "single":
            add_rows(trained, store, row_ids, progress=progress, desc=f"index {factory}")
            faiss.write_index(trained, str(tmp / "index.faiss"))
            files = ["index.faiss"]
        else:
            shards = [row_ids[s : s + shard_rows] for s in range(0, len(row_ids), shard_rows)]
            for n, rows in enumerate(shards):
                shard = faiss.clone_index(trained)
                add_rows(shard, store, rows, progress=progress, desc=f"shard {n + 1}/{len(shards)}")
                faiss.write_index(shard, str(tmp / f"shard-{n:05d}.faiss"))
                files.append(f"shard-{n:05d}.faiss")
                del shard
            if layout == "ondisk":
                from faiss.contrib.ondisk import merge_ondisk

                merged = faiss.clone_index(trained)
                merge_ondisk(merged, [str(tmp / f) for f in files], str(tmp / "index.ivfdata"))
                faiss.write_index(merged, str(tmp / "index.faiss"))
                for f in files:
                    (tmp / f).unlink()
                files = ["index.faiss", "index.ivfdata"]
        manifest = {
            "format": INDEX_FORMAT,
            "factory": factory,
            "layout": layout,
            "dim": store.dim,
            "ntotal": len(row_ids),
            "metric": "inner_product",
            "train_size": min(train_size, len(row_ids)),
            "seed": seed,
            "search_params": search_params,
            "files": files,
            "store": str(store.path),
            "source": _index_source(store, row_ids, factory, layout, search_params),
            "build_seconds": time.perf_counter() - started,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if recall_queries:
        index = open_index_dir(out_dir)
        manifest["recall"] = measure_recall(index, store, k=k, queries=recall_queries, seed=seed)
        write_json_atomic(Path(out_dir) / "manifest.json", manifest)
    return manifest


def rows_digest(row_ids: np.ndarray) -> str:
    """sha256 of a set of row ids (order does not matter)."""
    return hashlib.sha256(np.sort(np.asarray(row_ids, dtype=np.int64)).tobytes()).hexdigest()


def store_digest(store: EmbeddingStore) -> str:
    """sha256 over the checksums of a store's shards: changes whenever any vector does."""
    return hashlib.sha256(",".join(s["sha256"] for s in store.manifest["shards"]).encode()).hexdigest()


def _index_source(
    store: EmbeddingStore, row_ids: np.ndarray, factory: str, layout: str, params: dict
) -> dict:
    """What an index directory was built from: the store's shard checksums and the rows."""
    return {
        "store_sha256": store_digest(store),
        "rows_sha256": rows_digest(row_ids),
        "factory": factory,
        "layout": layout,
        "search_params": params,
    }


def ensure_index_dir(
    store: EmbeddingStore, out_dir: str | Path, factory: str = DEFAULT_FACTORY, **options
) -> tuple[dict, bool]:
    """Build the index directory unless one from the same store, rows, factory, layout and
    search parameters is already there (re-runs of a pipeline skip the build).

    Args:
        store: the embeddings.
        out_dir: the index directory.
        factory: faiss index_factory string.
        **options: as for :func:`build_index_dir`.

    Returns:
        (the manifest, whether it was already there).
    """
    path = Path(out_dir) / "manifest.json"
    if path.is_file():
        manifest = json.loads(path.read_text())
        row_ids = options.get("row_ids")
        row_ids = store.row_ids if row_ids is None else np.asarray(row_ids, dtype=np.int64)
        wanted = _index_source(
            store, row_ids, factory, options.get("layout", "single"), dict(options.get("search_params") or {})
        )
        if manifest.get("source") == wanted:
            return manifest, True
    return build_index_dir(store, out_dir, factory, **options), False


def open_index_dir(path: str | Path, mmap: bool = False) -> faiss.Index:
    """Open an index directory; ``mmap`` keeps single/shard files on disk (the ondisk layout's
    lists always are). Search parameters from the manifest are applied."""
    path = Path(path)
    manifest = read_manifest(path, INDEX_FORMAT, "an index directory")
    flags = faiss.IO_FLAG_MMAP if mmap else 0
    params = manifest.get("search_params") or {}
    if manifest["layout"] == "shards":
        index = faiss.IndexShards(manifest["dim"], False, False)
        for name in manifest["files"]:
            part = faiss.read_index(str(path / name), flags)
            set_search_parameters(part, **params)
            index.add_shard(part)  # faiss keeps a reference to each part
        return index
    if manifest["layout"] == "ondisk":
        index = faiss.read_index(str(path / "index.faiss"), faiss.IO_FLAG_ONDISK_SAME_DIR)
    else:
        index = faiss.read_index(str(path / "index.faiss"), flags)
    set_search_parameters(index, **params)
    return index


def exact_knn(
    store: EmbeddingStore, queries: np.ndarray, query_ids: np.ndarray, k: int, chunk_rows: int = 65_536
):
    """Exact (D, I) by brute force over the store, a chunk at a time (no full copy), self excluded."""
    best_D = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_I = np.full((len(queries), k), -1, dtype=np.int64)
    for start, block in store.iter_chunks(chunk_rows):
        sims = queries @ np.asarray(block).T
        ids = np.broadcast_to(store.row_ids[start : start + len(block)], sims.shape)
        sims = np.where(ids == query_ids[:, None], -np.inf, sims)
        D = np.concatenate([best_D, sims], axis=1)
        I = np.concatenate([best_I, ids], axis=1)
        top = np.argsort(-D, axis=1, kind="stable")[:, :k]
        best_D, best_I = np.take_along_axis(D, top, 1), np.take_along_axis(I, top, 1)
    return best_D, best_I


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
