"""The faiss index over U, keyed by global int64 row ids: build, train, add, search.

Small free functions in the style of faiss.contrib; :func:`search` returns (D, I). Vectors are
unit-norm and the metric is inner product, so D holds cosine similarities.
"""

from __future__ import annotations

import faiss
import numpy as np
from tqdm import tqdm

from seals_al.errors import SealsError, shown
from seals_al.settings import DEFAULT_FACTORY, DEFAULT_NPROBE, RETRAIN_GROWTH
from seals_al.store import EmbeddingStore


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
    shards can be merged); others are wrapped in an IndexIDMap2. An IVF index probes
    :data:`~seals_al.settings.DEFAULT_NPROBE` lists per query (faiss's own default, 1, misses
    many true neighbours); its file keeps that, and an index directory's search parameters
    override it."""
    inner = check_factory(dim, factory)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is None:
        return faiss.IndexIDMap2(inner)
    ivf.nprobe = min(DEFAULT_NPROBE, ivf.nlist)
    return inner


def search_key(dim: int, factory: str) -> str:
    """The factory string and, for an IVF index, the lists it probes: what a neighbour graph
    built through a factory's index depends on besides the rows."""
    index = empty_index(dim, factory)  # kept while ivf, a view into it, is read
    ivf = faiss.try_extract_index_ivf(index)
    return factory if ivf is None else f"{factory} nprobe={ivf.nprobe}"


def train(index: faiss.Index, store: EmbeddingStore, row_ids: np.ndarray, train_size: int, seed: int) -> None:
    """Train on a seeded sample of the rows, if the index needs training."""
    if index.is_trained:
        return
    index.train(store.vectors(row_ids[training_sample(len(row_ids), train_size, seed)]))


def training_sample(rows: int, train_size: int, seed: int) -> np.ndarray:
    """The sorted positions, among ``rows`` rows, of the seeded sample an index is trained on
    (the same rows wherever it is trained: in one process or on a Beam worker)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(train_size, rows), replace=False))


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
        raise SealsError(f"invalid faiss factory string {shown(factory)}: {e}") from e


def due_for_training(dim: int, factory: str, rows: int, trained_on: int) -> bool:
    """Whether an index kept for growing data should be trained again before it takes more rows:
    it is trained (IVF centroids, PQ codebooks, fit to the rows it was trained on; Flat and HNSW
    are not) and U has grown to more than (1 + :data:`~seals_al.settings.RETRAIN_GROWTH`) times
    the ``trained_on`` rows."""
    return rows > (1 + RETRAIN_GROWTH) * trained_on and not check_factory(dim, factory).is_trained


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
