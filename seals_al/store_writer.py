"""Writing an embeddings store (:mod:`seals_al.store`): whole at once, or appended to shard by shard,
into a temporary sibling folder published with one ``os.replace``."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from seals_al.arrays import sorted_unique
from seals_al.errors import SealsError, shown
from seals_al.storage.files import atomic_dir, check_replaceable, file_sha256
from seals_al.store import FORMAT, ID_TABLE, MANIFEST, EmbeddingStore, Manifest


def write_store(
    out_dir: str | Path,
    ids: Sequence[str],
    vectors: np.ndarray,
    *,
    model: str,
    normalized: bool,
    row_ids: np.ndarray | None = None,
    shard_rows: int = 1_000_000,
    extra: dict | None = None,
) -> EmbeddingStore:
    """Write a store from arrays in memory, atomically, and return it opened.

    Args:
        out_dir: the store directory; replaced whole if it exists.
        ids: external string ids, one per vector row.
        vectors: float32-convertible array [n, dim].
        model: name of the model that produced the vectors.
        normalized: whether rows are L2-normalized (cosine = inner product).
        row_ids: global int64 row ids (default 0..n-1); unique, any order.
        shard_rows: maximum rows per shard file.
        extra: free-form provenance recorded in the manifest.

    Returns:
        The written store, opened for reading.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise SealsError(
            f"{out_dir}: {len(ids)} ids but vectors of shape {vectors.shape}; expected ({len(ids)}, dim)"
        )
    row_ids = np.arange(len(ids), dtype=np.int64) if row_ids is None else np.asarray(row_ids, np.int64)
    if len(row_ids) != len(ids):
        raise SealsError(f"{out_dir}: row ids must be unique, one per vector")
    with StoreWriter(
        out_dir, dim=vectors.shape[1], model=model, normalized=normalized, extra=extra
    ) as writer:
        for start in range(0, len(ids), shard_rows):
            stop = start + shard_rows
            writer.add(ids[start:stop], vectors[start:stop], row_ids[start:stop])
    return EmbeddingStore.open(out_dir)


class StoreWriter:
    """Write a store shard by shard, so no more than one shard is ever in memory.

    ``with StoreWriter(out, dim=..., model=..., normalized=...) as w: w.add(ids, vectors, row_ids)``;
    the id table and manifest are written on a clean exit and the directory published at once;
    on an error nothing is published.
    """

    def __init__(
        self, out_dir: str | Path, *, dim: int, model: str, normalized: bool, extra: dict | None = None
    ):
        self.out_dir = Path(out_dir)
        check_replaceable(self.out_dir, FORMAT)
        self.dim = dim
        self.model = model
        self.normalized = normalized
        self.extra = dict(extra or {})
        self._ids: list[str] = []
        self._row_ids: list[np.ndarray] = []
        self._shards: list[dict] = []

    def __enter__(self) -> StoreWriter:
        self._publish = atomic_dir(self.out_dir, FORMAT)
        self._tmp = self._publish.__enter__()
        return self

    def add(self, ids: Sequence[str], vectors: np.ndarray, row_ids: np.ndarray | None = None) -> None:
        """Append one shard."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise SealsError(
                f"{self.out_dir}: a shard of {len(ids)} ids has vectors of shape {vectors.shape}; "
                f"expected ({len(ids)}, {self.dim})"
            )
        if row_ids is None:
            row_ids = np.arange(len(self._ids), len(self._ids) + len(ids), dtype=np.int64)
        name = f"shard-{len(self._shards):05d}.npy"
        np.save(self._tmp / name, vectors, allow_pickle=False)
        self._shards.append({"path": name, "rows": len(ids), "sha256": file_sha256(self._tmp / name)})
        self._ids.extend(ids)
        self._row_ids.append(np.asarray(row_ids, dtype=np.int64))

    def add_scattered(
        self,
        ids: Sequence[str],
        row_ids: np.ndarray,
        parts: Iterable[tuple[np.ndarray, np.ndarray]],
        shard_rows: int,
    ) -> None:
        """Append shards that hold ``ids`` in this order (with ``row_ids``), whose vectors come in
        parts in any order, each (positions among ``ids``, vectors): every part is written where
        its rows go, one part in memory at a time. Workers that embed in any order thus still
        give a store whose rows are in the order asked for (row id order: no lookup to find a
        row). Every position must come exactly once."""
        n, first_shard = len(ids), len(self._shards)
        if len(row_ids) != n:
            raise SealsError(f"{self.out_dir}: {len(row_ids)} row ids for {n} ids")
        starts = list(range(0, n, shard_rows))
        names = [f"shard-{first_shard + i:05d}.npy" for i in range(len(starts))]
        files = [
            np.lib.format.open_memmap(
                self._tmp / name, mode="w+", dtype=np.float32, shape=(min(shard_rows, n - start), self.dim)
            )
            for name, start in zip(names, starts, strict=True)
        ]
        written = np.zeros(n, bool)
        for positions, vectors in parts:
            positions = np.asarray(positions, np.int64)
            vectors = np.asarray(vectors, np.float32)
            if vectors.shape != (len(positions), self.dim):
                raise SealsError(
                    f"{self.out_dir}: a part of {len(positions)} rows has vectors of shape {vectors.shape}"
                )
            if len(positions) and (positions.min() < 0 or positions.max() >= n or written[positions].any()):
                raise SealsError(f"{self.out_dir}: a part's rows are outside 0..{n - 1} or came twice")
            written[positions] = True
            shard = positions // shard_rows
            for s in np.unique(shard).tolist():
                mask = shard == s
                files[s][positions[mask] - s * shard_rows] = vectors[mask]
        if not written.all():
            missing = int(np.flatnonzero(~written)[0])
            raise SealsError(f"{self.out_dir}: no vector came for id {shown(ids[missing])}")
        for name, array in zip(names, files, strict=True):
            array.flush()
            self._shards.append({"path": name, "rows": len(array), "sha256": file_sha256(self._tmp / name)})
        del files
        self._ids.extend(ids)
        self._row_ids.append(np.asarray(row_ids, dtype=np.int64))

    def add_store(self, base: EmbeddingStore) -> None:
        """Take every shard of an existing store first, hard-linked (copied where a link cannot
        be made), with its ids and row ids: appending to a store writes only the new shards, and
        the base store is left as it was."""
        if base.dim != self.dim:
            raise SealsError(f"{base.path}: vectors of dimension {base.dim}, this store's are {self.dim}")
        for shard in base.manifest["shards"]:
            name = f"shard-{len(self._shards):05d}.npy"
            try:
                os.link(base.path / shard["path"], self._tmp / name)
            except OSError:
                shutil.copyfile(base.path / shard["path"], self._tmp / name)
            self._shards.append({"path": name, "rows": int(shard["rows"]), "sha256": shard["sha256"]})
        self._ids.extend(base.ids)
        self._row_ids.append(np.asarray(base.row_ids, dtype=np.int64))

    @property
    def count(self) -> int:
        """Rows added so far."""
        return len(self._ids)

    def add_file(self, name: str, data: bytes) -> None:
        """Publish another file with the store (a dead-letter list, a report)."""
        if name in (MANIFEST, ID_TABLE) or name.startswith(("shard-", ".")) or "/" in name:
            raise SealsError(f"{self.out_dir}: {name!r} is reserved or not a plain file name")
        (self._tmp / name).write_bytes(data)

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            row_ids = np.concatenate(self._row_ids) if self._row_ids else np.empty(0, np.int64)
            if len(sorted_unique(row_ids)) != len(row_ids):
                error = SealsError(f"{self.out_dir}: row ids must be unique, one per vector")
                self._publish.__exit__(SealsError, error, None)
                raise error
            if not self._shards:  # an empty store still has one (empty) shard
                np.save(
                    self._tmp / "shard-00000.npy", np.zeros((0, self.dim), np.float32), allow_pickle=False
                )
                self._shards.append(
                    {
                        "path": "shard-00000.npy",
                        "rows": 0,
                        "sha256": file_sha256(self._tmp / "shard-00000.npy"),
                    }
                )
            _write_id_table(self._tmp / ID_TABLE, self._ids, row_ids)
            manifest = Manifest(
                self.model,
                self.dim,
                len(self._ids),
                self.normalized,
                tuple(self._shards),
                self.extra,
                bool(np.array_equal(row_ids, np.arange(len(row_ids)))),
            )
            (self._tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
        self._publish.__exit__(kind, value, traceback)


def _write_id_table(path: Path, ids: Sequence[str], row_ids: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array(list(ids), pa.string()), "row_id": pa.array(row_ids, pa.int64())})
    pq.write_table(table, path)
