"""The embeddings store: its on-disk format and its reader (docs/ARCHITECTURE.md); the writers are
in :mod:`seals_al.store_writer`.

A store is a directory::

    manifest.json        format, model, dim, count, normalized, shards with row counts and sha256;
                         "row_ids": "positions" when row id i is stored at position i
    ids.parquet          id (external string id) and row_id (global int64), in storage order
    shard-00000.npy ...  float32 [rows, dim], read by row, memory-mapped or read whole

Row ids are global and stable: the faiss index and the candidate pool are keyed by them, never by
a position inside a shard. A store is written into a temporary sibling directory and published
with one ``os.replace``, so a reader never sees half a store. A store is read where it is: a
local folder, or a published folder on gs:// read by range (:mod:`seals_al.published`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seals_al.arrays import ACCESS, ArrayFile, gather, search_sorted, sparse_sample
from seals_al.errors import SealsError, shown
from seals_al.folders import Folder, LocalFolder
from seals_al.storage.files import file_sha256, parse_manifest

FORMAT = "seals-embeddings/1"
MANIFEST = "manifest.json"
ID_TABLE = "ids.parquet"


@dataclass(frozen=True)
class Manifest:
    """What a store holds; written as manifest.json."""

    model: str
    dim: int
    count: int
    normalized: bool
    shards: tuple[dict, ...]
    extra: dict
    row_ids_are_positions: bool = False  # row id i is at position i: no id table read to find it

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "dim": self.dim,
            "count": self.count,
            "normalized": self.normalized,
            "dtype": "float32",
            "id_table": ID_TABLE,
            "shards": list(self.shards),
            **({"row_ids": "positions"} if self.row_ids_are_positions else {}),
            **({"extra": self.extra} if self.extra else {}),
        }


def l2_normalize(vectors: np.ndarray, ids: Sequence[str] | None = None, source: str = "") -> np.ndarray:
    """Return float32 unit rows; a NaN, infinite or all-zero row is an error naming its id."""
    vectors = np.asarray(vectors, dtype=np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(vectors, axis=1)
    bad |= norms == 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        what = f"id {shown(ids[row])}" if ids is not None else f"row {row}"
        kind = "is all zeros" if np.isfinite(vectors[row]).all() else "has NaN or infinite values"
        raise SealsError(f"{source}: embedding of {what} {kind}")
    return vectors / norms[:, None]


class RowLookup:
    """Where global row ids sit in an array of unique row ids (a store's id table, a graph's
    rows), in memory or on disk (:mod:`seals_al.arrays`). Three cases, told apart by the sorted
    ids' first and last values alone:

    - the ids are 0..n-1 in order (what embedding writes): the position is the id;
    - the ids are 0..n-1 in another order (what the Beam pipeline writes): one read of the order;
    - otherwise a binary search in the sorted ids (through a sparse sample, on disk).

    An id that is not there is an error naming ``where`` and the id. Shared by the store, the
    neighbour graph and the prepared columns."""

    _sample: np.ndarray | None = None  # a sorted array on disk: its sparse sample, once read
    _excluded: np.ndarray | None = None  # complement(): the rows of 0..n-1 that are not there

    def __init__(self, row_ids: np.ndarray, where: str | Path, unknown: str = "unknown row id {}"):
        order = None  # None: the ids are sorted already (a graph's rows)
        if len(row_ids) and np.any(row_ids[1:] < row_ids[:-1]):
            order = np.argsort(row_ids, kind="stable")
        self._setup(row_ids if order is None else row_ids[order], order, where, unknown)

    def _setup(self, sorted_ids, order, where: str | Path, unknown: str) -> None:
        self.where, self.unknown = where, unknown
        self._n = n = len(sorted_ids)
        self._sorted, self._order = sorted_ids, order
        # Sorted and unique, so 0 first and n-1 last means 0..n-1 throughout.
        every = bool(n and sorted_ids[0] == 0 and sorted_ids[n - 1] == n - 1)
        self._dense = every and order is None  # row id == position
        self._permutation = every and order is not None  # position == order[row id]

    @classmethod
    def presorted(
        cls,
        sorted_ids: np.ndarray | ArrayFile,
        order: np.ndarray | ArrayFile | None,
        where: str | Path,
        unknown: str = "unknown row id {}",
        sample: np.ndarray | None = None,
    ) -> RowLookup:
        """A lookup from ids known to be sorted (``order``: their positions, None when the sorted
        ids are the positions' own order), such as a graph's rows or a prepared data set's
        columns: nothing is read to check them, so opening costs O(1). ``sample``: the sorted
        ids' sparse sample when it was published beside them (else read on first use)."""
        lookup = cls.__new__(cls)
        lookup._setup(sorted_ids, order, where, unknown)
        lookup._sample = sample
        return lookup

    @classmethod
    def complement(
        cls, n: int, excluded: np.ndarray, where: str | Path, unknown: str = "unknown row id {}"
    ) -> RowLookup:
        """The lookup of the rows 0..n-1 but ``excluded`` (sorted), in order: a row's position is
        the row id less the excluded ones before it; nothing on disk is read."""
        lookup = cls.__new__(cls)
        lookup.where, lookup.unknown, lookup._n = where, unknown, n
        lookup._order, lookup._sorted, lookup._dense, lookup._permutation = None, None, False, False
        lookup._excluded = np.asarray(excluded, np.int64)
        return lookup

    @classmethod
    def positions(cls, n: int, where: str | Path, unknown: str = "unknown row id {}") -> RowLookup:
        """The lookup of row ids 0..n-1 that are their own positions."""
        lookup = cls.__new__(cls)
        lookup.where, lookup.unknown, lookup._n = where, unknown, n
        lookup._order, lookup._sorted, lookup._dense, lookup._permutation = None, None, True, False
        return lookup

    def __call__(self, row_ids: np.ndarray) -> np.ndarray:
        """Positions of the given row ids, in the order asked."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if self._excluded is not None:
            before = np.searchsorted(self._excluded, row_ids)
            hit = np.minimum(before, max(len(self._excluded) - 1, 0))
            bad = (row_ids < 0) | (row_ids >= self._n)
            if len(self._excluded):
                bad |= self._excluded[hit] == row_ids
            if bad.any():
                raise SealsError(f"{self.where}: {self.unknown.format(int(row_ids[np.flatnonzero(bad)[0]]))}")
            return row_ids - before
        if self._dense or self._permutation:
            if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= self._n):
                bad = int(row_ids[np.flatnonzero((row_ids < 0) | (row_ids >= self._n))[0]])
                raise SealsError(f"{self.where}: {self.unknown.format(bad)}")
            return row_ids if self._dense else np.asarray(self._order[row_ids])
        if self._sample is None and isinstance(self._sorted, ArrayFile):
            self._sample = sparse_sample(self._sorted)
        at = np.minimum(search_sorted(self._sorted, row_ids, self._sample), max(self._n - 1, 0))
        missing = np.asarray(self._sorted[at]) != row_ids if self._n else np.ones(len(row_ids), bool)
        if missing.any():
            bad = int(row_ids[np.flatnonzero(missing)[0]])
            raise SealsError(f"{self.where}: {self.unknown.format(bad)}")
        return at if self._order is None else np.asarray(self._order[at])


def rows_digest(row_ids: np.ndarray) -> str:
    """sha256 of a set of row ids (order does not matter)."""
    return hashlib.sha256(np.sort(np.asarray(row_ids, dtype=np.int64)).tobytes()).hexdigest()


class EmbeddingStore:
    """Read access to a store by global row id; its shards read by rows, memory-mapped or read
    into RAM (``access``, :data:`seals_al.arrays.ACCESS`), locally or (by rows) on gs://.

    Opening reads the manifest and the shards' headers, nothing more: the id table is read on first
    use of :attr:`ids` or :attr:`row_ids`, and a store whose row ids are its positions (what
    embedding and importing write) is looked up without it. Rows a process already holds (a
    campaign's labeled examples, read back with its round) can be handed to :meth:`remember`:
    they are then served from memory, not read again.
    """

    def __init__(
        self,
        folder: Folder,
        manifest: dict,
        shards: list[np.ndarray | ArrayFile],
        mapped: bool = True,
        lookup: RowLookup | None = None,
    ):
        self.folder = folder
        self.uri = folder.uri
        self.manifest = manifest
        self.dim = int(manifest["dim"])
        self._shards = shards
        self._mapped = mapped
        self._offsets = np.cumsum([0] + [s.shape[0] for s in shards])
        self._count = int(self._offsets[-1])
        if lookup is None and manifest.get("row_ids") == "positions":
            lookup = RowLookup.positions(self._count, self.uri)
        self._lookup = lookup
        self._ids: list[str] | None = None
        self._row_ids: np.ndarray | None = None
        self._by_external: dict[str, int] | None = None
        self._known_positions = np.empty(0, np.int64)  # sorted; rows held in memory (remember)
        self._known_vectors = np.empty((0, self.dim), np.float32)

    @classmethod
    def published(cls, uri: str | Path, cache_dir: str | Path | None = None) -> EmbeddingStore:
        """The store published at ``uri`` (a folder or gs://), its rows read by range where they
        are (nothing downloaded); nothing published there is an error naming ``uri``. How Beam
        workers and their drivers open a store."""
        from seals_al.folders import open_published

        return cls.open(open_published(uri, "an embeddings store", cache_dir), access="rows")

    @classmethod
    def open(
        cls,
        path: str | Path | Folder,
        verify: bool = False,
        in_memory: bool = False,
        lookup: RowLookup | None = None,
        access: str = "mapped",
    ) -> EmbeddingStore:
        """Open a store (its manifest read, and its shards' headers unless a published listing
        has them).

        Args:
            path: the store directory, or a folder (:func:`seals_al.published.open_folder`: a
                published store on gs:// is read by range).
            verify: also check every shard's sha256 against the manifest (a local store).
            in_memory: copy the shards into one array in RAM (a gather is then one fancy index,
                and no page of it can be evicted: for benchmarks that time reads in RAM).
            lookup: where each row id is stored, when the caller has it prepared (a store whose
                row ids are not its positions); default: from the id table when first needed.
            access: how shards are read (:data:`seals_al.arrays.ACCESS`): ``rows`` reads just the
                rows asked for (a one-round process), ``mapped`` maps them (a long-lived one),
                ``ram`` maps them with every page read in at once. A remote store is read by rows.
        """
        folder = path if isinstance(path, Folder) else LocalFolder(path)
        if not folder.has(MANIFEST):
            raise SealsError(f"{folder.uri}: not an embeddings store (no {MANIFEST})")
        manifest = parse_manifest(folder.read_bytes(MANIFEST), folder.where(MANIFEST), FORMAT)
        if access not in ACCESS:
            raise SealsError(f"unknown store access {access!r}; use one of {', '.join(ACCESS)}")
        shards = []
        for shard in manifest["shards"]:
            where = folder.where(shard["path"])
            if (
                verify
                and folder.local is not None
                and file_sha256(folder.local / shard["path"]) != shard["sha256"]
            ):
                raise SealsError(f"{where}: checksum does not match the manifest")
            array = folder.array(shard["path"], "mapped" if in_memory else access)
            if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != manifest["dim"]:
                raise SealsError(
                    f"{where}: expected float32 [rows, {manifest['dim']}], found {array.dtype} {array.shape}"
                )
            shards.append(array)
        if sum(s.shape[0] for s in shards) != manifest["count"]:
            raise SealsError(f"{folder.uri}: shard rows and manifest count disagree")
        if in_memory:  # one contiguous array: a gather is a single fancy index, whatever the shards
            whole = np.empty((manifest["count"], manifest["dim"]), np.float32)
            start = 0
            for array in shards:
                whole[start : start + len(array)] = array[:]
                start += len(array)
            shards = [whole]
        return cls(folder, manifest, shards, mapped=not in_memory, lookup=lookup)

    def local_copy(self, cache_dir: str | Path | None = None, progress: bool = True) -> EmbeddingStore:
        """This store on this machine's disk, memory-mapped, for reading every row (an index or a
        graph build): itself when it is local, else its published version copied into the cache
        first (:func:`seals_al.published.materialize`)."""
        if self.folder.local is not None:
            return self
        from seals_al.published import materialize

        path = materialize(self.uri, "an embeddings store", cache_dir, progress)
        return EmbeddingStore.open(path, lookup=self._lookup, access="mapped")

    @property
    def path(self) -> Path:
        """The store's directory on this machine (a store read on gs:// has none)."""
        if self.folder.local is None:
            raise SealsError(f"{self.uri}: read where it is published, not from a local folder")
        return self.folder.local

    def _id_table(self, column: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = self.manifest.get("id_table", ID_TABLE)
        local = self.folder.local
        source = local / name if local is not None else pa.BufferReader(self.folder.read_bytes(name))
        table = pq.read_table(source, columns=[column])
        if table.num_rows != self._count:
            raise SealsError(f"{self.uri}: id table and manifest count disagree")
        return table.column(column)

    @property
    def ids(self) -> list[str]:
        """External ids by storage position (the id table, read on first use)."""
        if self._ids is None:
            self._ids = self._id_table("id").to_pylist()
        return self._ids

    @property
    def row_ids(self) -> np.ndarray:
        """Global row ids by storage position (read on first use; a store that declares its row
        ids to be its positions needs no read)."""
        if self._row_ids is None:
            if self.manifest.get("row_ids") == "positions":
                self._row_ids = np.arange(self._count, dtype=np.int64)
            else:
                self._row_ids = self._id_table("row_id").to_numpy().astype(np.int64)
        return self._row_ids

    def __len__(self) -> int:
        return self._count

    def positions(self, row_ids: np.ndarray) -> np.ndarray:
        """Storage positions of global row ids; an unknown row id is an error naming the store."""
        if self._lookup is None:
            self._lookup = RowLookup(self.row_ids, self.uri)
        return self._lookup(row_ids)

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    def digest(self) -> str:
        """sha256 over the checksums of the shards: changes whenever any vector does."""
        return hashlib.sha256(",".join(s["sha256"] for s in self.manifest["shards"]).encode()).hexdigest()

    def row_ids_of(self, external_ids: Sequence[str]) -> np.ndarray:
        """Global row ids of external ids; an unknown id is an error naming it."""
        if self._by_external is None:
            self._by_external = {e: int(r) for e, r in zip(self.ids, self.row_ids, strict=True)}
        out = np.empty(len(external_ids), dtype=np.int64)
        for i, e in enumerate(external_ids):
            if e not in self._by_external:
                raise SealsError(f"{self.uri}: unknown id {shown(e)}")
            out[i] = self._by_external[e]
        return out

    def external_ids(self, row_ids: np.ndarray) -> list[str]:
        """External string ids of global row ids."""
        return [self.ids[p] for p in self.positions(row_ids)]

    def vectors(self, row_ids: np.ndarray) -> np.ndarray:
        """Gather the vectors of global row ids into a new float32 array, in the order asked."""
        return self.vectors_at(self.positions(row_ids))

    def remember(self, row_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Hold these rows' vectors in memory: later gathers take them from here, not from the
        shards (a campaign hands over the vectors its last round saved)."""
        positions = self.positions(np.asarray(row_ids, dtype=np.int64))
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(positions), self.dim):
            raise SealsError(f"{self.uri}: {vectors.shape} vectors for {len(positions)} rows of {self.dim}-d")
        merged = np.concatenate([self._known_positions, positions])
        stacked = np.concatenate([self._known_vectors, vectors])
        keep = np.unique(merged, return_index=True)[1]  # sorted, each position once
        self._known_positions, self._known_vectors = merged[keep], stacked[keep]

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """Gather vectors by storage position (0..len-1); on disk or gs://, every shard's rows in
        one batch of reads."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self._mapped:  # in RAM: one array, one fancy index
            return self._shards[0][positions]
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        wanted = np.ones(len(positions), bool)
        if len(self._known_positions) and len(positions):
            at = np.minimum(np.searchsorted(self._known_positions, positions), len(self._known_positions) - 1)
            held = self._known_positions[at] == positions
            out[held] = self._known_vectors[at[held]]
            wanted = ~held
        if not wanted.any():
            return out
        if len(self._shards) == 1 and not isinstance(self._shards[0], ArrayFile):
            at = np.flatnonzero(wanted)
            order = at[np.argsort(positions[at], kind="stable")]  # sequential reads from the map
            out[order] = self._shards[0][positions[order]]
            return out
        at = np.flatnonzero(wanted)
        shard_of = np.searchsorted(self._offsets, positions[at], side="right") - 1
        on_disk, groups = [], []
        for s in np.unique(shard_of).tolist():
            mask = at[shard_of == s]
            rows = positions[mask] - self._offsets[s]
            if isinstance(self._shards[s], ArrayFile):
                on_disk.append((self._shards[s], rows))
                groups.append(mask)
            else:
                out[mask] = self._shards[s][rows]
        for mask, rows in zip(groups, gather(on_disk), strict=True):
            out[mask] = rows
        return out

    @property
    def shard_starts(self) -> np.ndarray:
        """The storage position where each shard starts, then the row count."""
        return self._offsets.copy()

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop-1`` by storage position, within one shard: a view of the shard
        (nothing copied) when it is memory-mapped or in RAM."""
        s = int(np.searchsorted(self._offsets, start, side="right")) - 1
        if not 0 <= start <= stop <= self._offsets[min(s + 1, len(self._offsets) - 1)]:
            raise SealsError(f"{self.uri}: rows {start}..{stop} are not inside one shard")
        base = int(self._offsets[s])
        return self._shards[s][start - base : stop - base]

    def iter_chunks(self, chunk_rows: int = 65_536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start position, float32 block) in storage order, one chunk in memory at a time.

        A store on disk is read with large sequential reads, a new block per chunk, so a scan
        leaves no pages of the store mapped."""
        if not self._mapped:
            for start in range(0, len(self), chunk_rows):
                yield start, self._shards[0][start : start + chunk_rows]
            return
        for s, shard in enumerate(self.manifest["shards"]):
            reader = self.folder.array(shard["path"], "rows")
            for start in range(0, len(reader), chunk_rows):
                yield int(self._offsets[s]) + start, reader.read(start, start + chunk_rows)
