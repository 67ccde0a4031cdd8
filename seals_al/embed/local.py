"""Embeddings for a run in one process: texts embedded with the text encoder into a store kept in
the cache (keyed by model and data, so a second run reuses it), or precomputed vectors (.npy rows
or a Parquet column) imported into the store format. The distributed path is the Beam pipeline,
:mod:`seals_al.embed.pipeline`; both end in the same store format (:mod:`seals_al.store`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seals_al.encoder import MiniLMEncoder
from seals_al.errors import SealsError, shown
from seals_al.failpoints import failpoint
from seals_al.storage.uris import default_cache_dir
from seals_al.store import EmbeddingStore, l2_normalize
from seals_al.store_writer import StoreWriter, write_store

SHARD_ROWS = 1_000_000  # rows per shard of an imported store, normalized and hashed one at a time


def cache_key(model: str, ids: Sequence[str], texts: Sequence[str]) -> str:
    """A digest of the model name and every (id, text) pair: same data and model, same key."""
    digest = hashlib.sha256(f"{model}\n".encode())
    for item_id, text in zip(ids, texts, strict=True):
        digest.update(f"{item_id}\t{text}\n".encode())
    return digest.hexdigest()[:24]


def embed_texts(
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    encoder: MiniLMEncoder | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    base: EmbeddingStore | None = None,
) -> EmbeddingStore:
    """Embed texts into a store under the cache, or open the cached store from an earlier run.

    Args:
        ids: external ids, one per text.
        texts: the texts; an empty text is an error naming its id.
        encoder: the text encoder (default: all-MiniLM-L6-v2).
        cache_dir: where stores are kept, one per (data, model) key.
        progress: show a progress bar while encoding.
        base: a store that holds some of these items already, with these texts (the previous
            version of the same data): only the ids it lacks are embedded, and the new store is
            its shards (hard-linked, unchanged, their row ids kept) then one new shard.

    Returns:
        The store; without ``base``, row ids are the positions 0..n-1 of the input; with it, the
        new items' row ids follow the base's largest.
    """
    encoder = encoder or MiniLMEncoder()
    for item_id, text in zip(ids, texts, strict=True):
        if not text.strip():
            raise SealsError(f"empty text for id {shown(item_id)}: nothing to embed")
    store_dir = Path(cache_dir or default_cache_dir()) / "embeddings" / cache_key(encoder.name, ids, texts)
    if (store_dir / "manifest.json").is_file():
        return EmbeddingStore.open(store_dir)
    if base is None:
        vectors = _encode(encoder, texts, progress)
        return write_store(store_dir, ids, vectors, model=encoder.name, normalized=True)
    if base.model != encoder.name or base.dim != encoder.dim:
        raise SealsError(
            f"{base.path}: embedded by {base.model} ({base.dim}-d); new items would be embedded by "
            f"{encoder.name} ({encoder.dim}-d), and one store holds one model's vectors"
        )
    known = set(base.ids)
    new = [i for i, item_id in enumerate(ids) if item_id not in known]
    vectors = _encode(encoder, [texts[i] for i in new], progress)
    first = int(base.row_ids.max()) + 1 if len(base) else 0
    extra = {"appended_to": base.digest(), "appended": len(new), "base_count": len(base)}
    with StoreWriter(store_dir, dim=encoder.dim, model=encoder.name, normalized=True, extra=extra) as writer:
        writer.add_store(base)
        if new:
            writer.add([ids[i] for i in new], vectors, np.arange(first, first + len(new), dtype=np.int64))
        failpoint("during_append")  # killed here: nothing is published, the base is as it was
    return EmbeddingStore.open(store_dir)


def _encode(encoder: MiniLMEncoder, texts: Sequence[str], progress: bool) -> np.ndarray:
    step = 1024
    blocks = []
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), step):
            blocks.append(encoder.encode(texts[start : start + step]))
            bar.update(len(blocks[-1]))
    return np.concatenate(blocks) if blocks else np.zeros((0, encoder.dim), np.float32)


def import_embeddings(
    path: str | Path,
    ids: Sequence[str],
    *,
    cache_dir: str | Path | None = None,
    column: str = "embedding",
    id_column: str = "id",
) -> EmbeddingStore:
    """Bring precomputed embeddings into the store format, aligned with ``ids``.

    Args:
        path: a store directory (manifest.json), a .npy file with one row per item in item order,
            or a .parquet file with an id column and a list-of-floats column.
        ids: the items' external ids, in item order.
        cache_dir: where the imported store is kept.
        column: the Parquet column holding the vectors.
        id_column: the Parquet column holding the ids.

    Returns:
        An L2-normalized store whose rows follow ``ids``.
    """
    path = Path(path)
    if path.is_dir():
        store = EmbeddingStore.open(path)
        store.row_ids_of(ids)  # every item must be in the store
        return store
    if not path.is_file():
        raise SealsError(f"{path}: no such embeddings file")
    if path.suffix == ".npy":
        try:
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise SealsError(f"{path}: not a numeric .npy array: {e}") from e
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise SealsError(f"{path}: shape {vectors.shape}, expected ({len(ids)}, dim): one row per item")
    elif path.suffix == ".parquet":
        vectors = _parquet_vectors(path, ids, column, id_column)
    else:
        raise SealsError(f"{path}: unsupported embeddings file (use a store directory, .npy or .parquet)")

    def normalized() -> Iterator[tuple[int, np.ndarray]]:
        """Unit rows a shard at a time: a memory-mapped .npy is never copied whole."""
        for start in range(0, len(ids), SHARD_ROWS):
            stop = start + SHARD_ROWS
            yield start, l2_normalize(vectors[start:stop], ids[start:stop], str(path))

    digest = hashlib.sha256()
    for _, chunk in normalized():
        digest.update(chunk.tobytes())
    store_dir = Path(cache_dir or default_cache_dir()) / "embeddings" / f"imported-{digest.hexdigest()[:24]}"
    if (store_dir / "manifest.json").is_file():
        return EmbeddingStore.open(store_dir)
    options = {"model": f"precomputed:{path.name}", "normalized": True, "extra": {"source": str(path)}}
    with StoreWriter(store_dir, dim=vectors.shape[1], **options) as writer:
        for start, chunk in normalized():
            writer.add(ids[start : start + len(chunk)], chunk)
    return EmbeddingStore.open(store_dir)


def _parquet_vectors(path: Path, ids: Sequence[str], column: str, id_column: str) -> np.ndarray:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    for c in (id_column, column):
        if c not in names:
            raise SealsError(f"{path}: missing column {c!r}; the file has {', '.join(map(repr, names))}")
    table = pq.read_table(path, columns=[id_column, column])
    by_id = {str(i): row for row, i in enumerate(table.column(id_column).to_pylist())}
    values = table.column(column).to_pylist()
    dims = {len(v) for v in values if v is not None}
    if len(dims) != 1:
        raise SealsError(f"{path}: column {column!r} rows have differing lengths {sorted(dims)[:5]}")
    out = np.empty((len(ids), dims.pop()), dtype=np.float32)
    for i, item_id in enumerate(ids):
        row = by_id.get(item_id)
        if row is None:
            raise SealsError(f"{path}: no embedding for id {shown(item_id)}")
        if values[row] is None or any(v is None for v in values[row]):
            raise SealsError(f"{path}: null in column {column!r} for id {shown(item_id)}")
        out[i] = values[row]
    return out
