"""The SEALS candidate pool, maintained incrementally.

Invariant: with E the expanded set (every labeled or selected example),
``P = union over x in E of kNN(x), minus E``, where kNN(x) is x's k nearest neighbours in the
index, x itself excluded. Each example is queried once, when it enters E; nothing is recomputed
from scratch. Pool members' vectors are cached in memory so that rescoring P each round touches
only P, never U. With ``with_density`` (information density) each member's own kNN density is
queried once when it joins and cached. One flag byte per row of the store marks members and
expanded rows, so filtering a neighbour list is a single gather; it is the pool's only per-row-of-U
memory (10 MB at 10M rows), allocated as zero pages.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from seals_al.arrays import ArrayFile, npz_bytes
from seals_al.errors import SealsError
from seals_al.index.graph import NeighbourGraph
from seals_al.index.neighbours import Neighbours, as_neighbours, neighbour_density
from seals_al.storage.base import NotFoundError, Storage
from seals_al.storage.files import atomic_path
from seals_al.store import EmbeddingStore


@dataclass(frozen=True)
class Arrivals:
    """Members that joined the pool in one expansion (parallel arrays)."""

    ids: np.ndarray
    reached_from: np.ndarray
    vectors: np.ndarray
    density: np.ndarray | None


class CandidatePool:
    """The candidate pool P, over a faiss index or a precomputed neighbour graph."""

    def __init__(
        self,
        neighbours: faiss.Index | Neighbours,
        store: EmbeddingStore,
        k: int,
        *,
        with_density: bool = False,
    ):
        if k < 1:
            raise SealsError(f"k must be at least 1, got {k}")
        self.neighbours = as_neighbours(neighbours)
        self.store = store
        self.k = k
        # A graph read on object storage with its records: arrivals come with their lists (their
        # kNN density is the graph's, for the graph's own k).
        graph = self.neighbours
        self._records = isinstance(graph, NeighbourGraph) and graph.has_records and graph.k == k
        self.with_density = with_density
        self.expanded: set[int] = set()
        self.queries = 0  # kNN queries made so far (expansions + density look-ups)
        self._slot: dict[int, int] = {}
        self._n = 0
        self._ids = np.empty(0, np.int64)
        self._from = np.empty(0, np.int64)
        self._density = np.empty(0, np.float32)
        self._alive = np.empty(0, bool)
        self._vectors = _Blocks(store.dim)
        self._left: dict[int, np.ndarray] = {}  # members expanded in this process: their vectors
        # Records of the likely picks' neighbours, read ahead (:meth:`prefetch`): row id ->
        # (vector, kNN density), taken when the row arrives; dropped when a selection starts.
        self._ahead: dict[int, tuple[np.ndarray, float]] = {}
        # Members and expanded rows flagged by storage position, so a neighbour list is filtered by
        # one gather rather than a dict lookup per neighbour: one byte per row of the store (10 MB
        # at 10M rows, a small fraction of the store), zero pages until touched.
        self._known = np.zeros(len(store), bool)

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, row_id: int) -> bool:
        return row_id in self._slot

    def reached_from(self, row_id: int) -> int:
        """The expanded example whose neighbour list first brought ``row_id`` into the pool."""
        return int(self._from[self._slot[row_id]])

    def slots(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None, np.ndarray]:
        """(ids, vector blocks, density, alive) views of every slot, removed members included: the
        start of a selection (the last selection's :meth:`left_vectors` are let go).

        Scoring every slot block by block and masking is cheaper than copying the members out
        each round; the buffers are compacted once removed members pass a quarter of them.
        """
        self._left.clear()  # a new selection: the last one's picks are no longer asked for
        self._ahead.clear()
        if self._n and len(self._slot) < 0.75 * self._n:
            self._compact()
        n = self._n
        density = self._density[:n] if self.with_density else None
        return self._ids[:n], self._vectors.blocks(n), density, self._alive[:n]

    # -- updating ------------------------------------------------------------------------
    def expand(self, row_ids: Iterable[int]) -> Arrivals:
        """Move examples into the expanded set and add their neighbours to the pool.

        Each given example leaves the pool (if it was there); examples already expanded are
        skipped, so calling this again with the same labels makes no query.

        Returns:
            The members that joined, with the example that brought each one in.
        """
        expanded, slot = self.expanded, self._slot
        fresh = [r for r in dict.fromkeys(map(int, row_ids)) if r not in expanded]
        if not fresh:
            return self._empty_arrivals()
        queries = np.asarray(fresh, dtype=np.int64)

        def query_vectors() -> np.ndarray:
            cached = [slot.get(r) for r in fresh]
            if all(c is not None for c in cached):  # pool members: their vectors are here already
                return self._vectors.rows(np.asarray(cached))
            return self.store.vectors(queries)

        neighbours = self.neighbours.ids(queries, self.k, query_vectors)
        self.queries += len(fresh)
        outsiders = []  # expanded without having been members, e.g. labeled rows
        for r in fresh:
            expanded.add(r)
            at = slot.pop(r, None)
            if at is None:
                outsiders.append(r)
            else:
                self._alive[at] = False
                self._left[r] = self._vectors.rows(np.asarray([at]))[0]
        if outsiders:
            self._known[self.store.positions(np.asarray(outsiders, dtype=np.int64))] = True
        ids = neighbours.ravel()
        sources = np.repeat(queries, neighbours.shape[1])
        if len(ids) and ids.min() < 0:  # faiss pads short lists with -1
            found = ids >= 0
            ids, sources = ids[found], sources[found]
        positions = self.store.positions(ids)
        new = ~self._known[positions]
        ids, positions, sources = ids[new], positions[new], sources[new]
        if len(dict.fromkeys(ids.tolist())) < len(ids):
            # Reached by several lists: it joins once, from the first list (in the order given).
            first = np.sort(np.unique(ids, return_index=True)[1])
            ids, positions, sources = ids[first], positions[first], sources[first]
        if not len(ids):
            return self._empty_arrivals()
        self._known[positions] = True
        density = None
        if self._records:  # each arrival's vector, density and own list in one read
            vectors, recorded = self._arrival_records(ids)
            if self.with_density:
                self.queries += len(ids)
                density = np.asarray(recorded, np.float32)
        else:
            vectors = self.store.vectors_at(positions)
            if self.with_density:
                D, _ = self.neighbours.knn(ids, self.k, lambda: vectors)
                self.queries += len(ids)
                density = neighbour_density(D)
        arrivals = Arrivals(ids, sources, np.asarray(vectors, np.float32), density)
        self._append(arrivals)
        return arrivals

    def prefetch(self, row_ids: np.ndarray) -> None:
        """Read ahead what expanding these rows (the likely picks) will need: their lists, in one
        batch, and, with a graph's records, the records of their neighbours that are not members
        yet, in a second. On object storage a pick then waits for no read at all; a row read
        ahead that never arrives costs only its bytes."""
        prefetch = getattr(self.neighbours, "prefetch", None)
        if prefetch is None:
            return
        row_ids = np.asarray(row_ids, np.int64)
        prefetch(row_ids)
        if not self._records or not len(row_ids):
            return
        ids = self.neighbours.ids(row_ids, self.k).ravel()  # read just now: no second read
        ids = np.unique(ids[ids >= 0])
        ids = ids[~self._known[self.store.positions(ids)]]
        ids = np.asarray([r for r in ids.tolist() if r not in self._ahead], np.int64)
        if len(ids):
            vectors, density = self.neighbours.records_of(ids)
            self._ahead.update(zip(ids.tolist(), zip(vectors, density.tolist(), strict=True), strict=True))

    def _arrival_records(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, kNN densities) of arriving rows from the graph's records: those read ahead
        from memory, the others in one batch."""
        ahead = [self._ahead.pop(r, None) for r in ids.tolist()]
        vectors = np.empty((len(ids), self.store.dim), np.float32)
        density = np.empty(len(ids), np.float32)
        missing = np.asarray([i for i, found in enumerate(ahead) if found is None], np.int64)
        if len(missing):
            vectors[missing], density[missing] = self.neighbours.records_of(ids[missing])
        for i, found in enumerate(ahead):
            if found is not None:
                vectors[i], density[i] = found
        return vectors, density

    def left_vectors(self, row_ids: Sequence[int]) -> np.ndarray:
        """The vectors of members that left the pool when they were expanded in this process
        (a round's picks); a row that was never a member here is read from the store."""
        missing = [r for r in row_ids if r not in self._left]
        found = (
            dict(zip(missing, self.store.vectors(np.asarray(missing, np.int64)), strict=True))
            if missing
            else {}
        )
        rows = [self._left[r] if r in self._left else found[r] for r in row_ids]
        return np.stack(rows) if rows else np.empty((0, self.store.dim), np.float32)

    def remove(self, row_ids: Iterable[int]) -> int:
        """Take rows out for good without expanding them (items that left: the tombstone list):
        members leave the pool, and no neighbour list brings them back. Their own neighbours are
        not queried; rows already expanded stay expanded.

        Returns:
            How many members left the pool.
        """
        rows = np.fromiter(map(int, row_ids), dtype=np.int64)
        if not len(rows):
            return 0
        self._known[self.store.positions(rows)] = True
        left = 0
        for r in rows.tolist():
            at = self._slot.pop(r, None)
            if at is not None:
                self._alive[at] = False
                left += 1
        return left

    def _empty_arrivals(self) -> Arrivals:
        empty = np.empty(0, np.int64)
        density = np.empty(0, np.float32) if self.with_density else None
        return Arrivals(empty, empty, np.empty((0, self.store.dim), np.float32), density)

    def _append(self, a: Arrivals) -> None:
        need = self._n + len(a.ids)
        if need > len(self._ids):
            cap = max(need, 2 * len(self._ids), 1024)
            self._ids = _grow(self._ids, cap)
            self._from = _grow(self._from, cap)
            self._density = _grow(self._density, cap)
            self._alive = _grow(self._alive, cap)
        s, e = self._n, need
        self._ids[s:e] = a.ids
        self._from[s:e] = a.reached_from
        if a.density is not None:
            self._density[s:e] = a.density
        self._vectors.write(s, a.vectors)
        self._alive[s:e] = True
        self._slot.update(zip(a.ids.tolist(), range(s, e), strict=True))
        self._n = e

    def _compact(self) -> None:
        n = self._n
        if len(self._slot) == n:
            return
        keep = np.flatnonzero(self._alive[:n])
        for name in ("_ids", "_from", "_density", "_alive"):
            array = getattr(self, name)
            array[: len(keep)] = array[keep]
        self._vectors.keep(keep)
        self._n = len(keep)
        self._slot = {r: i for i, r in enumerate(self._ids[: self._n].tolist())}

    # -- persistence (no pickle: plain arrays and JSON) ------------------------------------
    def save(
        self, storage: Storage, prefix: str, cache: MemberVectors | None = None, marker: str | None = None
    ) -> None:
        """Write the pool state (expanded set, members, sources, densities) as .npz + JSON.

        Each object is written atomically; pool.json, written last, names the counts that
        :meth:`load` checks pool.npz against, so files from two different saves are detected.
        ``cache`` keeps the members' vectors on this machine for the next :meth:`load`. ``marker``
        (data that has grown: the digest of U's rows) is recorded, so that a load over other data
        knows the pool is not its own.
        """
        self._compact()
        n = self._n
        data = npz_bytes(
            {
                "expanded": np.fromiter(sorted(self.expanded), dtype=np.int64, count=len(self.expanded)),
                "ids": self._ids[:n],
                "reached_from": self._from[:n],
                "density": self._density[:n] if self.with_density else np.empty(0, np.float32),
            }
        )
        storage.write_bytes(f"{prefix}/pool.npz", data)
        vectors = _npy_bytes(self._vectors.blocks(n), self.store.dim)
        storage.write_bytes(f"{prefix}/{VECTORS}", vectors)
        if cache is not None:
            cache.write(data, vectors)
        meta = {
            "k": self.k,
            "with_density": self.with_density,
            "queries": self.queries,
            "size": n,
            "expanded": len(self.expanded),
            "vectors": {"sha256": hashlib.sha256(vectors).hexdigest(), "store": self.store.digest()},
            **({"data": marker} if marker is not None else {}),
        }
        storage.write_json(f"{prefix}/pool.json", meta)

    @classmethod
    def load(
        cls,
        storage: Storage,
        prefix: str,
        neighbours: faiss.Index | Neighbours,
        store: EmbeddingStore,
        cache: MemberVectors | None = None,
        marker: str | None = None,
    ) -> CandidatePool | None:
        """Read a saved pool (no pickle); member vectors come from ``cache`` when it holds them
        for this exact pool.npz, else from the vectors saved with it (one read; checked against
        its sha256 and the store's digest), else they are gathered again from the store.

        ``marker``: the digest of U's rows when the data has grown (else None). When it is not what
        the pool was saved with, the pool's neighbour lists are of other data: None is returned,
        and the caller builds the pool again over the data as it is."""
        meta = storage.read_json(f"{prefix}/pool.json")
        if meta.get("data") != marker:
            return None
        saved = storage.read_bytes(f"{prefix}/pool.npz")
        with np.load(io.BytesIO(saved), allow_pickle=False) as data:
            if len(data["ids"]) != meta["size"] or len(data["expanded"]) != meta["expanded"]:
                raise SealsError(
                    f"{storage.where(prefix)}: pool.npz and pool.json disagree (an interrupted save?)"
                )
            pool = cls(neighbours, store, int(meta["k"]), with_density=bool(meta["with_density"]))
            pool.expanded = set(data["expanded"].tolist())
            pool._known[store.positions(data["expanded"])] = True
            ids = data["ids"]
            density = data["density"] if pool.with_density else None
            positions = store.positions(ids)
            pool._known[positions] = True
            vectors = cache.read(saved, len(ids)) if cache is not None else None
            if vectors is None:
                vectors = _saved_vectors(storage, prefix, meta, store, len(ids))
            if vectors is None:
                vectors = store.vectors_at(positions)
            pool._append(Arrivals(ids, data["reached_from"], vectors, density))
        pool.queries = int(meta["queries"])
        return pool


VECTORS = "vectors.npy"  # beside pool.npz: the members' vectors, in its order


def _npy_bytes(blocks: list[np.ndarray], dim: int) -> bytes:
    """Float32 rows, block after block, as the bytes of one .npy file."""
    out = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (sum(map(len, blocks)), dim)}
    np.lib.format.write_array_header_1_0(out, header)
    for block in blocks:
        out.write(np.ascontiguousarray(block, dtype="<f4").data)
    return out.getvalue()


def _saved_vectors(
    storage: Storage, prefix: str, meta: dict, store: EmbeddingStore, n: int
) -> np.ndarray | None:
    """The members' vectors saved with a pool, or None when they are not usable: not saved (a
    pool saved before they were), pruned, of another store, or not matching their checksum."""
    expected = meta.get("vectors")
    if not isinstance(expected, dict) or expected.get("store") != store.digest():
        return None
    try:
        raw = storage.read_bytes(f"{prefix}/{VECTORS}")
    except NotFoundError:
        return None
    if hashlib.sha256(raw).hexdigest() != expected.get("sha256"):
        return None
    vectors = np.load(io.BytesIO(raw), allow_pickle=False)
    return vectors if vectors.shape == (n, store.dim) and vectors.dtype == np.float32 else None


class MemberVectors:
    """Pool members' vectors kept on this machine's disk from one round to the next, so a round
    restores its pool with one sequential read instead of one read per member (some 40,000
    scattered rows of the store at 10M rows, the largest part of a select stage's reading).

    A file is named by the sha256 of the pool.npz it goes with and the store's digest, so it is
    only ever read back for that exact pool over that exact store. Files are written atomically
    and only the newest :attr:`KEEP` are kept. A missing file is a miss, never an error: the
    vectors are then read from the store, as on a machine that has never seen the campaign.
    """

    KEEP = 8

    def __init__(self, folder: Path, store: EmbeddingStore):
        self.folder = Path(folder)
        self.dim = store.dim
        self._store_digest = store.digest()

    def _path(self, saved_pool: bytes) -> Path:
        key = hashlib.sha256(saved_pool + self._store_digest.encode()).hexdigest()[:32]
        return self.folder / f"{key}.npy"

    def read(self, saved_pool: bytes, n: int) -> np.ndarray | None:
        """The ``n`` members' vectors for this pool.npz, or None when they are not here."""
        try:
            kept = ArrayFile(self._path(saved_pool))
            if kept.shape != (n, self.dim) or kept.dtype != np.float32:
                return None
            return kept.read(0, n)
        except (SealsError, OSError):  # absent, pruned meanwhile, or cut short: gather them again
            return None

    def write(self, saved_pool: bytes, vectors: bytes) -> None:
        """Keep the members' vectors (an .npy's bytes, in the order of pool.npz) for the next load."""
        written = self._path(saved_pool)
        with atomic_path(written) as tmp:
            tmp.write_bytes(vectors)
        others = []
        for path in self.folder.glob("*.npy"):
            if path != written and not path.name.startswith("."):  # "." : being written
                with suppress(FileNotFoundError):  # pruned by another process meanwhile
                    others.append((path.stat().st_mtime_ns, path))
        for _, old in sorted(others, reverse=True)[self.KEEP - 1 :]:
            old.unlink(missing_ok=True)


class _Blocks:
    """A growable float32 matrix kept in fixed-size blocks: appending never copies old rows."""

    ROWS = 8192

    def __init__(self, dim: int):
        self.dim = dim
        self._blocks: list[np.ndarray] = []

    def write(self, start: int, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            at = start + done
            b, offset = divmod(at, self.ROWS)
            while b >= len(self._blocks):
                self._blocks.append(np.empty((self.ROWS, self.dim), np.float32))
            take = min(self.ROWS - offset, len(rows) - done)
            self._blocks[b][offset : offset + take] = rows[done : done + take]
            done += take

    def rows(self, slots: np.ndarray) -> np.ndarray:
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) == 1:
            b, offset = divmod(int(slots[0]), self.ROWS)
            return self._blocks[b][offset : offset + 1].copy()
        out = np.empty((len(slots), self.dim), np.float32)
        block_of = slots // self.ROWS
        for b in np.unique(block_of):
            mask = block_of == b
            out[mask] = self._blocks[b][slots[mask] - b * self.ROWS]
        return out

    def blocks(self, n: int) -> list[np.ndarray]:
        """Views of the first n rows, block by block."""
        full, rest = divmod(n, self.ROWS)
        views = self._blocks[:full]
        return [*views, self._blocks[full][:rest]] if rest else list(views)

    def keep(self, slots: np.ndarray) -> None:
        """Keep only the given rows (ascending slots), in order: compaction in place, a block at a
        time. Row i moves to slot i <= slots[i], so no row is overwritten before it is moved."""
        slots = np.asarray(slots, dtype=np.int64)
        for start in range(0, len(slots), self.ROWS):
            self.write(start, self.rows(slots[start : start + self.ROWS]))
        del self._blocks[-(-len(slots) // self.ROWS) :]


def _grow(array: np.ndarray, cap: int) -> np.ndarray:
    out = np.empty((cap, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out
