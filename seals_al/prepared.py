"""Prepared data: the item table's columns in files read by position and by id, prepared once per
data version, so that a round reads only the rows it touches, whatever the size of U, on this
machine's disk or where they are published on gs:// (docs/ARCHITECTURE.md, "What a round reads").

A data version is the items file and the embeddings as they are now: their sizes and modification
times (a gs:// object's generation), the embeddings store's manifest, and the column settings.
Its prepared folder is named by a digest of all that, and lives in the cache directory; when the
data is on gs:// it is also published (:mod:`seals_al.published`) beside a published store, or
under the campaign (``derived``), by whichever process prepares it first, and every later process
on any machine opens it there in O(1): its listing and manifest, then ranges as it reads::

    manifest.json          format, what it was prepared from, counts, the store, truth values
    strings.offsets.npy    int64 [n + 1, 2]: item i's id is strings.bytes[o[i, 0]:o[i, 1]] (UTF-8),
    strings.bytes          its text strings.bytes[o[i, 1]:o[i + 1, 0]] (one column without texts)
    ids.hash.npy           uint64, sorted: 64-bit BLAKE2b of each id, for lookups by id
    ids.hash.sample.npy    every 4,096th of them (arrays.SAMPLE_EVERY): which block to read
    ids.order.npy          int64: the item position of each hash
    eval.npy               bool per item: in the evaluation split
    eval_items.npy         int64: the positions of the evaluation split
    eval_truth.npy         int32: their truth codes (with a truth column)
    eval_vectors.npy       float32: their vectors, one read for an evaluation
    truth.npy              int32 per item: index into manifest["truth"]["values"] (with a truth column)
    row_ids.npy            int64 per row of the items file: its row id      } see "positions"
    rows.sorted.npy        int64: the items' row ids sorted, and            } only when the row ids
    rows.order.npy         int64: the item position of each (+ .sample)     } are not 0..n-1
    store.sorted.npy       int64: the store's row ids sorted, and           } absent when the store
    store.order.npy        int64: their storage positions (+ .sample)       } declares them positions

Positions: when the items' row ids are 0..n-1 (what embedding, importing and the Beam pipeline
write), an item's position is its row id: the columns are in row-id order, and going between rows
and items reads nothing (``row_ids.npy`` keeps the items file's order, for :meth:`Prepared.items`).
Otherwise positions follow the items file's order and ``rows.*`` map between the two.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from seals_al import ranges
from seals_al.arrays import ArrayFile, gather, sample_of, search_sorted
from seals_al.errors import SealsError, shown
from seals_al.items import WILDCARDS, Items, item_files
from seals_al.published import (
    Folder,
    LocalFolder,
    check_target,
    materialize,
    materialize_if_published,
    open_folder,
    publish,
)
from seals_al.published import version as remote_version
from seals_al.settings import DataConfig
from seals_al.storage import local_file, open_storage
from seals_al.storage.base import NotFoundError
from seals_al.storage.files import atomic_dir, file_version, parse_manifest, write_json_atomic
from seals_al.storage.uris import default_cache_dir, is_remote, local_path, split_uri
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import MANIFEST, EmbeddingStore, RowLookup, rows_digest

FORMAT = "seals-prepared/2"
# Read with a published version's listing, in one batch: what every stage opens it with.
PRELOAD = ("manifest.json", "eval_items.npy", "eval_truth.npy", "ids.hash.sample.npy")
U, EVAL = 0, 1
SPAN_READ_BYTES = 1 << 20  # strings within this many bytes are read in one go, however few


def _hash64(values: Sequence[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in values),
        dtype=np.uint64,
        count=len(values),
    )


class Strings:
    """Columns of strings stored item by item: each item's strings side by side (UTF-8) in one
    bytes file, their offsets in one array ``[n + 1, columns]`` (column j of item i starts at
    ``offsets[i, j]`` and ends where the next string starts). Reading items' strings, whatever
    columns are asked for, is then two reads per item (on gs://: two batches for them all): their
    offsets, then their bytes. When the items asked for fill at least half of the bytes they span,
    or that span is at most :data:`SPAN_READ_BYTES` (a scan of every item, a run of new items),
    the span is read at once."""

    def __init__(self, folder: Folder | Path, columns: Sequence[str], access: str = "rows"):
        folder = folder if isinstance(folder, Folder) else LocalFolder(folder)
        self.columns = list(columns)
        self.offsets = folder.array("strings.offsets.npy", access)
        self.source = folder.source("strings.bytes")

    @staticmethod
    def write(folder: Path, columns: dict[str, Sequence[str]]) -> None:
        """Write the columns (each one string per item, in item order)."""
        values = list(columns.values())
        n = len(values[0])
        offsets = np.zeros((n + 1, len(values)), np.int64)
        at = 0
        with open(folder / "strings.bytes", "wb") as out:
            for i in range(n):
                for j, column in enumerate(values):
                    encoded = column[i].encode()
                    offsets[i, j] = at
                    out.write(encoded)
                    at += len(encoded)
        offsets[n, :] = at
        np.save(folder / "strings.offsets.npy", offsets)

    def at(self, positions: Sequence[int] | np.ndarray, columns: Sequence[str] = ("ids",)) -> list[list[str]]:
        """The asked columns' strings of the items at these positions (a list per column)."""
        positions = np.asarray(positions, np.int64)
        n, asked = len(positions), [self.columns.index(c) for c in columns]
        if not n:
            return [[] for _ in asked]
        bounds = _read_rows([(self.offsets, np.concatenate([positions, positions + 1]))])[0]
        here = bounds[:n]
        ends = np.concatenate([here[:, 1:], bounds[n:, :1]], axis=1)  # where each string ends
        low, high = here[:, min(asked)], ends[:, max(asked)]
        span_low, span_high = int(low.min()), int(high.max())
        if span_high - span_low <= max(SPAN_READ_BYTES, 2 * int((high - low).sum())):
            span = bytearray(span_high - span_low)  # the strings fill at least half of it: one read
            ranges.read([(self.source, span_low, memoryview(span))])
            parts, origin = [span] * n, np.full(n, span_low)
        else:
            parts = [bytearray(int(b - a)) for a, b in zip(low, high, strict=True)]
            ranges.read(
                [(self.source, int(a), memoryview(part)) for a, part in zip(low, parts, strict=True) if part]
            )
            origin = low
        out = []
        for j in asked:
            a, b = (here[:, j] - origin).tolist(), (ends[:, j] - origin).tolist()
            out.append([parts[i][a[i] : b[i]].decode() for i in range(n)])
        return out


def _read_rows(parts: list[tuple[np.ndarray | ArrayFile, np.ndarray]]) -> list[np.ndarray]:
    """Rows of arrays that are on disk (one batch) or in memory."""
    on_disk = [(a, p) for a, p in parts if isinstance(a, ArrayFile)]
    read = iter(gather(on_disk))
    return [next(read) if isinstance(a, ArrayFile) else np.asarray(a[p]) for a, p in parts]


def data_version(config: DataConfig) -> dict:
    """What identifies the data as it is now, read without reading the data: the items file's size
    and modification time (a gs:// object's generation), the embeddings' (a store's manifest, a
    published store's listing), and every column setting. Any change makes a new version,
    prepared again. On gs:// the items' and the embeddings' versions are read at once."""

    def file_stat(uri: str) -> str:
        if is_remote(uri):
            parent, name = split_uri(uri)
            return open_storage(parent).version(name)
        return file_version(local_path(uri))

    def data_stat() -> str:
        uri = config.data
        if is_remote(uri) and not uri.endswith("/") and not any(c in uri for c in WILDCARDS):
            try:  # one object: its generation, in one request
                return file_stat(uri)
            except NotFoundError:
                pass  # a folder of item files
        files = item_files(uri)
        # One file: its version, as always; a folder or glob: each file's name and version.
        return file_stat(uri) if files == [uri] else "; ".join(f"{f} {file_stat(f)}" for f in files)

    def embeddings_stat() -> str | None:
        uri = config.embeddings
        if uri is None:
            return None
        if is_remote(uri):
            published = remote_version(uri)  # a folder published there (a store), by its listing
            return published if published is not None else file_stat(uri)
        path = local_path(uri)
        if path.is_dir():  # a store: its manifest names every shard's checksum; the id table by stat
            manifest = path / MANIFEST
            if not manifest.is_file():
                raise SealsError(f"{path}: not an embeddings store (no {MANIFEST})")
            data = manifest.read_bytes()
            ids = path / json.loads(data).get("id_table", "ids.parquet")
            return hashlib.sha256(data).hexdigest() + " " + file_version(ids)
        return file_version(path)

    data, embeddings = ranges.concurrently([data_stat, embeddings_stat])
    return {
        "format": FORMAT,
        "data": config.data,
        "data_version": data,
        "embeddings": config.embeddings,
        "embeddings_version": embeddings,
        "columns": [config.id_column, config.text_column, config.truth_column, config.split_column],
        "embeddings_column": config.embeddings_column,
        "eval_split": config.eval_split,
    }


@dataclass(frozen=True)
class Prepared:
    """A prepared data version, opened: the item columns, the lookups between ids, item positions
    and row ids, and the embeddings store."""

    folder: Folder
    manifest: dict
    store: EmbeddingStore
    access: str = "rows"  # how the columns and the store are read (seals_al.arrays.ACCESS)
    shared: str | None = None  # where this data's versions are published (None: this machine only)
    cache_dir: str | Path | None = None  # this machine's cache (None: $SEALS_CACHE_DIR)
    _arrays: dict[str, np.ndarray | ArrayFile] = field(default_factory=dict, repr=False, compare=False)

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        folder: Folder | Path,
        access: str = "rows",
        cache_dir: str | Path | None = None,
        shared: str | None = None,
    ) -> Prepared:
        """Open a prepared folder (local, or published on gs:// and read by range); ``access``:
        ``rows`` for a one-round process (each lookup reads just its rows), ``mapped`` for a
        long-lived one, ``ram`` to read it all in at once (a local folder)."""
        folder = folder if isinstance(folder, Folder) else LocalFolder(folder)
        if not folder.has("manifest.json"):
            raise SealsError(f"{folder.uri}: not a prepared data set (no manifest.json)")
        manifest = parse_manifest(folder.read_bytes("manifest.json"), folder.where("manifest.json"), FORMAT)
        lookup = None
        if folder.has("store.sorted.npy"):
            lookup = RowLookup.presorted(
                folder.array("store.sorted.npy", access),
                folder.array("store.order.npy", access),
                manifest["store"],
                sample=_sample(folder, "store.sorted"),
            )
        store = EmbeddingStore.open(_store_folder(manifest, access, cache_dir), lookup=lookup, access=access)
        if store.digest() != manifest["store_digest"]:
            raise SealsError(f"{manifest['store']}: the store changed since {folder.uri} was prepared")
        return cls(folder, manifest, store, access, shared, cache_dir)

    def reopen(self, access: str) -> Prepared:
        """The same data opened another way (a published folder is copied into this machine's
        cache to be mapped)."""
        folder = self.folder
        if folder.local is None and access != "rows":
            folder = LocalFolder(materialize(folder.uri, "a prepared data set", self.cache_dir))
        return Prepared.open(folder, access, self.cache_dir, self.shared)

    @property
    def key(self) -> str:
        """The data version: the name of its prepared folder (a digest of what identifies it)."""
        return str(self.manifest["key"])

    def changes_since(self, key: str, store_digest: str) -> tuple[int, int] | None:
        """(items added, items gone) since the prepared version ``key`` whose store had
        ``store_digest``: counted by id while that version is still prepared (in this machine's
        cache, or where this data is published); else, when this store was appended to that
        store, its appended rows and none gone; else None (not known here)."""
        if key == self.key:
            return 0, 0
        previous = _find(key, self.shared, self.access, self.cache_dir)
        if previous is not None:
            now, before = self.id_hashes(), previous.id_hashes()
            return int((~np.isin(now, before)).sum()), int((~np.isin(before, now)).sum())
        extra = self.store.manifest.get("extra", {})
        if extra.get("appended_to") == store_digest:
            return int(extra["appended"]), 0
        return None

    @property
    def count(self) -> int:
        """Items in the table."""
        return int(self.manifest["items"])

    @property
    def store_bytes(self) -> int:
        """The embeddings' size in bytes (float32 rows)."""
        return len(self.store) * self.store.dim * 4

    @property
    def u_count(self) -> int:
        return int(self.manifest["u_items"])

    @property
    def u_digest(self) -> str:
        """sha256 of U's row ids (:func:`seals_al.store.rows_digest`), computed once at preparation."""
        return str(self.manifest["u_rows_sha256"])

    @property
    def has_texts(self) -> bool:
        return bool(self.manifest["texts"])

    @property
    def positions_are_rows(self) -> bool:
        """Whether an item's position is its row id (the items' row ids are 0..n-1)."""
        return bool(self.manifest["row_ids_are_positions"])

    @property
    def truth_values(self) -> list[str] | None:
        truth = self.manifest.get("truth")
        return None if truth is None else list(truth["values"])

    def truth_count_in_u(self, value: str) -> int:
        """How many items of U have this truth value (counted at preparation)."""
        truth = self.manifest["truth"]
        return dict(zip(truth["values"], truth["u_counts"], strict=True)).get(value, 0)

    # -- columns (opened on first use) -------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray | ArrayFile:
        if name not in self._arrays:
            self._arrays[name] = self.folder.array(f"{name}.npy", self.access)
        return self._arrays[name]

    @cached_property
    def _strings(self) -> Strings:
        return Strings(self.folder, ["ids", "texts"] if self.has_texts else ["ids"], self.access)

    @cached_property
    def _hash_sample(self) -> np.ndarray | None:
        """The id hashes' sparse sample, read once per process."""
        hashes = self._array("ids.hash")
        return _sample(self.folder, "ids.hash") if isinstance(hashes, ArrayFile) else None

    @cached_property
    def _item_lookup(self) -> RowLookup:
        """Item positions by row id, built once per process (its sparse sample read once)."""
        unknown = "row id {} is not an item"
        if self.positions_are_rows:
            return RowLookup.positions(self.count, self.folder.uri, unknown)
        return RowLookup.presorted(
            self._array("rows.sorted"),
            self._array("rows.order"),
            self.folder.uri,
            unknown,
            sample=_sample(self.folder, "rows.sorted"),
        )

    @property
    def eval_items(self) -> np.ndarray:
        """Positions of the evaluation split (read whole: it is what a round evaluates on)."""
        return self._array("eval_items")[:]

    def eval_rows(self) -> np.ndarray:
        """Row ids of the evaluation split, in :attr:`eval_items` order."""
        return self.row_ids_at(self.eval_items)

    def eval_truth(self, concept: str) -> np.ndarray:
        """1 where the evaluation split's truth is the concept, else 0, in :attr:`eval_items` order
        (one read: the split's truth codes are stored together)."""
        return self._is(self._array("eval_truth")[:], concept)

    def eval_vectors(self) -> np.ndarray:
        """The evaluation split's vectors in :attr:`eval_items` order (one read of a copy made at
        preparation, not a read per row of the store)."""
        return self._array("eval_vectors")[:]

    def ids_at(self, items: np.ndarray) -> list[str]:
        return self._strings.at(items, ["ids"])[0]

    def texts_at(self, items: np.ndarray) -> list[str]:
        """Texts by item position ("" for every item when the table has none)."""
        return self._strings.at(items, ["texts"])[0] if self.has_texts else [""] * len(items)

    def ids_and_texts_at(self, items: np.ndarray) -> tuple[list[str], list[str]]:
        """Ids and texts of the same items, read together (two round trips on gs://)."""
        if not self.has_texts:
            return self.ids_at(items), [""] * len(items)
        ids, texts = self._strings.at(items, ["ids", "texts"])
        return ids, texts

    def truth_at(self, items: np.ndarray, concept: str) -> np.ndarray:
        """1 where the truth column equals the concept, else 0 (int8), by item position."""
        return self._is(self._array("truth")[np.asarray(items, np.int64)], concept)

    def _is(self, codes: np.ndarray, concept: str) -> np.ndarray:
        values = self.truth_values
        if values is None:
            raise SealsError(f"{self.manifest['source']['data']}: no ground-truth column")
        if concept not in values:
            return np.zeros(len(codes), np.int8)
        return (codes == values.index(concept)).astype(np.int8)

    # -- ids, item positions and row ids ---------------------------------------------------------
    def find(self, ids: Sequence[str]) -> np.ndarray:
        """Item positions of external ids, -1 where an id is not an item."""
        hashes, order = self._array("ids.hash"), self._array("ids.order")
        wanted = _hash64(ids)
        found = np.full(len(ids), -1, np.int64)
        if not len(ids) or not len(hashes):
            return found
        at = np.minimum(search_sorted(hashes, wanted, self._hash_sample), len(hashes) - 1)
        # The usual case in three batched reads: the hash there, its item, that item's id.
        hit = np.flatnonzero(_read_rows([(hashes, at)])[0] == wanted)
        items = np.asarray(_read_rows([(order, at[hit])])[0], np.int64)
        same = np.asarray([a == ids[i] for a, i in zip(self.ids_at(items), hit.tolist(), strict=True)], bool)
        found[hit[same]] = items[same]
        for i in hit[~same].tolist():  # another id with the same 64-bit hash first: look further
            p = int(at[i]) + 1
            while p < len(hashes) and hashes[p] == wanted[i]:
                item = int(order[p])
                if self.ids_at(np.asarray([item]))[0] == ids[i]:
                    found[i] = item
                    break
                p += 1
        return found

    def items_of(self, ids: Sequence[str], where: str = "") -> np.ndarray:
        """Item positions of external ids; an unknown id is an error naming it."""
        found = self.find(ids)
        if (found < 0).any():
            bad = ids[int(np.flatnonzero(found < 0)[0])]
            raise SealsError(f"{where or self.manifest['source']['data']}: unknown id {shown(bad)}")
        return found

    def id_hashes(self) -> np.ndarray:
        """The 64-bit hash of every item's id, by item position (read from the lookup, not the ids)."""
        hashes = np.empty(self.count, np.uint64)
        hashes[self._array("ids.order")[:]] = self._array("ids.hash")[:]
        return hashes

    def row_ids_at(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, np.int64)
        return items if self.positions_are_rows else self._array("row_ids")[items]

    def items_at_rows(self, row_ids: np.ndarray) -> np.ndarray:
        """Item positions of global row ids."""
        return self._item_lookup(np.asarray(row_ids, np.int64))

    def u_items(self) -> np.ndarray:
        """Positions of every item of U (reads the whole split column: for global mode and set-up)."""
        return np.flatnonzero(~self._array("eval")[:])

    def contains(self, ids: Sequence[str], *, in_u: bool = False) -> np.ndarray:
        """bool per id: an item (of U, with ``in_u``)."""
        found = self.find(ids)
        inside = found >= 0
        if in_u and inside.any():
            inside[inside] = ~self._array("eval")[found[inside]]
        return inside

    def items(self) -> Items:
        """The whole table in memory, in the items file's order (every column read: for
        simulations and seed draws, not rounds)."""
        everything = np.arange(self.count)
        if self.positions_are_rows and self.folder.has("row_ids.npy"):
            everything = self._array("row_ids")[:]  # the file's rows, by position
        values = self.truth_values
        truth = None if values is None else np.asarray(values, dtype=object)[self._array("truth")[everything]]
        source, columns = self.manifest["source"], self.manifest["source"]["columns"]
        return Items(
            source["data"],
            self.ids_at(everything),
            self.texts_at(everything) if self.has_texts else None,
            truth,
            self._array("eval")[everything],
            columns[2],
            source["eval_split"],
        )


class IdSet:
    """The ids of a prepared data set (or of its U) as a container, for label checks: each test
    looks one id up, so checking a label file reads only its own ids. :meth:`prefetch` looks many
    up at once (a batch of reads), and later tests of those ids read nothing."""

    def __init__(self, prepared: Prepared, in_u: bool = False):
        self.prepared = prepared
        self.in_u = in_u
        self._known: dict[str, bool] = {}

    def prefetch(self, ids: Sequence[str]) -> None:
        asked = sorted({i for i in ids if isinstance(i, str) and i not in self._known})
        if asked:
            self._known.update(
                zip(asked, self.prepared.contains(asked, in_u=self.in_u).tolist(), strict=True)
            )

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        if item_id not in self._known:
            self.prefetch([item_id])
        return self._known[item_id]


def _sample(folder: Folder, name: str) -> np.ndarray | None:
    """The published sparse sample of a sorted array (one read), or None when it has none."""
    return folder.array(f"{name}.sample.npy", "rows")[:] if folder.has(f"{name}.sample.npy") else None


def _store_folder(manifest: dict, access: str, cache_dir: str | Path | None) -> Folder:
    """The store a prepared folder names: a local one in place; a published one where it is (read
    by range) for ``rows``, opened from the listing and manifest the prepared folder recorded (no
    request), else its copy in this machine's cache."""
    uri = manifest["store"]
    if is_remote(uri) and access != "rows":
        return LocalFolder(materialize(uri, "an embeddings store", cache_dir))
    recorded = manifest.get("store_listing")
    held = {MANIFEST: manifest["store_manifest"].encode()} if "store_manifest" in manifest else None
    folder = open_folder(uri, cache_dir, listing=recorded.encode() if recorded else None, held=held)
    if folder is None:
        raise SealsError(f"{uri}: no embeddings store is published there any more")
    return folder


def shared_root(config: DataConfig, derived: str | None = None, version: dict | None = None) -> str | None:
    """Where what is built from this data is published for other machines: beside the embeddings
    when they are a store published on gs://, else ``derived`` (a gs:// campaign's own folder);
    None when the items are not on gs:// (another machine could not read them either).
    ``version``: the data's :func:`data_version`, when the caller has it (no request then)."""
    if not is_remote(config.data):
        return None
    if config.embeddings and is_remote(config.embeddings):
        published = (
            str(version["embeddings_version"]).startswith("published ")
            if version is not None
            else remote_version(config.embeddings) is not None
        )
        if published:
            return config.embeddings.rstrip("/")
    return derived.rstrip("/") if derived and is_remote(derived) else None


def _find(key: str, shared: str | None, access: str, cache_dir: str | Path | None) -> Prepared | None:
    """The prepared version ``key``, when this machine's cache or the shared folder has it."""
    local = Path(cache_dir or default_cache_dir()) / "prepared" / key
    try:
        if (local / "manifest.json").is_file():
            return Prepared.open(local, access, cache_dir, shared)
        if shared is not None:
            uri = f"{shared}/prepared/{key}"
            if access != "rows":
                path = materialize_if_published(uri, cache_dir, progress=False)
                return None if path is None else Prepared.open(path, access, cache_dir, shared)
            folder = open_folder(uri, cache_dir, PRELOAD)
            return None if folder is None else Prepared.open(folder, access, cache_dir, shared)
    except (SealsError, OSError):
        return None  # its store was removed or replaced, or it was pruned: prepared again
    return None


def prepare(
    config: DataConfig,
    items: Items | None = None,
    progress: bool = True,
    access: str = "rows",
    derived: str | None = None,
) -> Prepared:
    """The prepared folder of the data as it is now: opened if an earlier run prepared it, here or
    on any machine that published it, else prepared first (items read and checked, texts embedded
    or embeddings imported, columns written) and published for other machines.

    Args:
        config: the data settings.
        items: the table, when the caller has read it already.
        progress: show progress while embedding.
        access: how it is read (:meth:`Prepared.open`).
        derived: where a gs:// campaign keeps what it builds from U (:func:`shared_root`).

    Returns:
        The prepared data, opened.
    """
    version = data_version(config)
    key = hashlib.sha256(json.dumps(version, sort_keys=True).encode()).hexdigest()[:24]
    shared = shared_root(config, derived, version)
    found = _find(key, shared, access, config.cache_dir)
    if found is not None:
        return found
    folder = Path(config.cache_dir or default_cache_dir()) / "prepared" / key
    items = items or Items.load(config)
    lineage = _lineage(config)
    _write(folder, key, config, version, items, progress, _grown_from(lineage, config, items), shared, access)
    write_json_atomic(lineage, {"prepared": key})  # last: a crash before it leaves the old pointer
    return Prepared.open(folder, access, config.cache_dir, shared)


def _lineage(config: DataConfig) -> Path:
    """Where the newest prepared version of this data source (the same ``data:``, columns and
    embeddings setting) is named, so that the next version can grow from it."""
    source = json.dumps([config.data, config.id_column, config.text_column, config.embeddings])
    name = hashlib.sha256(source.encode()).hexdigest()[:24]
    return Path(config.cache_dir or default_cache_dir()) / "prepared" / "lineage" / f"{name}.json"


def _grown_from(lineage: Path, config: DataConfig, items: Items) -> EmbeddingStore | None:
    """The embeddings of the data's previous prepared version, when the new version only adds
    items to it: then only the new items are embedded (appended to that store). None when there is
    no previous version here, it is gone, it had imported embeddings, another model embedded it,
    or items left the data (a file removed or rows deleted): the new version is then embedded
    whole.

    Raises:
        SealsError: an item kept its id but its text changed (its vector would no longer be its).
    """
    if config.embeddings is not None or items.texts is None or not lineage.is_file():
        return None
    try:
        key = json.loads(lineage.read_text())["prepared"]
        previous = Prepared.open(lineage.parent.parent / str(key), "rows", config.cache_dir)
    except (SealsError, OSError, ValueError, KeyError, TypeError):
        return None
    if not previous.has_texts or previous.store.folder.local is None:
        return None
    from seals_al.encoder import TEXT_MODEL, TEXT_MODEL_DIM

    if (previous.store.model, previous.store.dim) != (TEXT_MODEL, TEXT_MODEL_DIM):
        return None  # embedded by another model: one store holds one model's vectors
    everything = np.arange(previous.count)
    old_ids = previous.ids_at(everything)
    where = {item_id: i for i, item_id in enumerate(items.ids)}
    left = False  # an item left: the version is embedded whole, but kept ids keep their texts
    for item_id, text in zip(old_ids, previous.texts_at(everything), strict=True):
        at = where.get(item_id)
        if at is None:
            left = True
            continue
        now = items.texts[at]
        if now != text:
            raise SealsError(
                f"{config.data}: the text of id {shown(item_id)} changed since it was embedded "
                f"(was {shown(text)}, now {shown(now)}); an item's text is fixed once embedded: "
                f"give the new text a new id, or remove {lineage} to embed the data whole"
            )
    return None if left else previous.store


def embeddings_path(config: DataConfig) -> Path:
    """A local path for configured embeddings that are a file (.npy, .parquet): a gs:// one
    downloaded, a local one as it is."""
    return local_file(str(config.embeddings), config.cache_dir or default_cache_dir())


def _store_of(
    config: DataConfig,
    items: Items,
    progress: bool,
    base: EmbeddingStore | None,
    shared: str | None,
    access: str,
) -> tuple[EmbeddingStore, str]:
    """The items' embeddings, and what the prepared folder names as their store: a store given as
    ``embeddings`` is opened where it is (a published one by range: preparing reads its id table
    and the evaluation split's rows, not every vector; copied here first when the process reads
    it all anyway, ``access`` other than rows) and named by its URI; texts embedded or a file
    imported make a store here, named by its path, or, when ``shared``, published there first so
    other machines read it too."""
    from seals_al.embed.local import embed_texts, import_embeddings
    from seals_al.encoder import TEXT_MODEL_DIM
    from seals_al.index.build import check_factory

    if config.embeddings is not None:
        given = config.embeddings
        folder = open_folder(given, config.cache_dir) if is_remote(given) else None
        if folder is not None and folder.local is None and access != "rows":
            folder = LocalFolder(materialize(given, "an embeddings store", config.cache_dir, progress))
        if folder is not None or (not is_remote(given) and local_path(given).is_dir()):
            store = EmbeddingStore.open(folder or LocalFolder(given), access="rows")
            store.row_ids_of(items.ids)  # every item must be in the store
            return store, given.rstrip("/") if is_remote(given) else str(store.path.resolve())
        store = import_embeddings(
            embeddings_path(config), items.ids, cache_dir=config.cache_dir, column=config.embeddings_column
        )
    else:
        check_factory(TEXT_MODEL_DIM, config.index_factory)  # a bad string fails before the embedding
        store = embed_texts(items.ids, items.texts, cache_dir=config.cache_dir, progress=progress, base=base)
    if shared is None:
        return store, str(store.path.resolve())
    uri = f"{shared}/stores/{store.digest()[:24]}"
    if remote_version(uri) is None:
        check_target(uri, STORE_FORMAT)
        publish(store.path, uri, STORE_FORMAT, progress)
    return store, uri


def _write(
    folder: Path,
    key: str,
    config: DataConfig,
    version: dict,
    items: Items,
    progress: bool,
    base: EmbeddingStore | None,
    shared: str | None,
    access: str,
) -> None:
    from seals_al.index.build import check_factory

    store, store_ref = _store_of(config, items, progress, base, shared, access)
    check_factory(store.dim, config.index_factory)
    row_ids = store.row_ids_of(items.ids)
    n = len(row_ids)
    # Positions: the row ids themselves when they are 0..n-1 (unique: the columns in row-id
    # order), else the items file's order.
    dense = bool(n and row_ids.min() == 0 and row_ids.max() == n - 1)
    order = np.argsort(row_ids, kind="stable") if dense else np.arange(n)  # position -> file row

    def at(column: Sequence[str]) -> Sequence[str]:
        return [column[i] for i in order.tolist()] if dense else column

    is_eval = items.is_eval[order]
    positions_rows = row_ids[order]
    store_positions = store.manifest.get("row_ids") == "positions"
    eval_items = np.flatnonzero(is_eval).astype(np.int64)
    truth = None
    with atomic_dir(folder, FORMAT) as tmp:
        ids = at(items.ids)
        Strings.write(tmp, {"ids": ids} | ({"texts": at(items.texts)} if items.texts is not None else {}))
        hashes = _hash64(ids)
        hash_order = np.argsort(hashes, kind="stable")
        np.save(tmp / "ids.hash.npy", hashes[hash_order])
        np.save(tmp / "ids.hash.sample.npy", sample_of(hashes[hash_order]))
        np.save(tmp / "ids.order.npy", hash_order.astype(np.int64))
        np.save(tmp / "eval.npy", is_eval)
        np.save(tmp / "eval_items.npy", eval_items)
        np.save(tmp / "eval_vectors.npy", store.vectors(positions_rows[eval_items]))
        if items.truth is not None:
            values, codes = np.unique(items.truth.astype(str), return_inverse=True)
            codes = codes[order]
            np.save(tmp / "truth.npy", codes.astype(np.int32))
            np.save(tmp / "eval_truth.npy", codes[is_eval].astype(np.int32))
            u_counts = np.bincount(codes[~is_eval], minlength=len(values))
            truth = {"values": values.tolist(), "u_counts": u_counts.tolist()}
        if dense:
            if not np.array_equal(row_ids, np.arange(n)):
                np.save(tmp / "row_ids.npy", row_ids)  # the items file's order, for items()
        else:
            np.save(tmp / "row_ids.npy", row_ids)
            rows_order = np.argsort(row_ids, kind="stable")
            np.save(tmp / "rows.sorted.npy", row_ids[rows_order])
            np.save(tmp / "rows.sorted.sample.npy", sample_of(row_ids[rows_order]))
            np.save(tmp / "rows.order.npy", rows_order.astype(np.int64))
        if not store_positions:
            store_order = np.argsort(store.row_ids, kind="stable")
            np.save(tmp / "store.sorted.npy", store.row_ids[store_order])
            np.save(tmp / "store.sorted.sample.npy", sample_of(store.row_ids[store_order]))
            np.save(tmp / "store.order.npy", store_order.astype(np.int64))
        manifest = {
            "format": FORMAT,
            "key": key,
            "source": version,
            "items": n,
            "u_items": int((~is_eval).sum()),
            "u_rows_sha256": rows_digest(row_ids[~items.is_eval]),
            "texts": items.texts is not None,
            "truth": truth,
            "row_ids_are_positions": dense,
            "store": store_ref,
            "store_digest": store.digest(),
            **_store_record(store, store_ref),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if shared is not None:
        _share(folder, f"{shared}/prepared/{key}", progress)


def _store_record(store: EmbeddingStore, ref: str) -> dict:
    """What opens a published store without a request: its listing and manifest as published."""
    listing = store.folder.published_listing()
    if not is_remote(ref) or listing is None:
        return {}
    return {"store_listing": listing.decode(), "store_manifest": store.folder.read_bytes(MANIFEST).decode()}


def _share(folder: Path, uri: str, progress: bool) -> None:
    """Publish a prepared folder for other machines; a failure (no permission to write there)
    leaves this machine's copy to use and says so: every other machine prepares it again."""
    from google.api_core.exceptions import GoogleAPIError

    try:
        check_target(uri, FORMAT)
        publish(folder, uri, FORMAT, progress)
    except (SealsError, GoogleAPIError) as e:
        print(
            f"warning: {uri}: prepared data not published ({e}); other machines prepare it again",
            file=sys.stderr,
        )
