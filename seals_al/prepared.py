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
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from seals_al import columns, ranges
from seals_al.arrays import ArrayFile, search_sorted
from seals_al.columns import Strings, read_rows
from seals_al.errors import SealsError, shown
from seals_al.folders import Folder, LocalFolder, open_folder
from seals_al.items import WILDCARDS, Items, item_files
from seals_al.published import materialize, materialize_if_published
from seals_al.published import version as remote_version
from seals_al.settings import DataConfig
from seals_al.storage import open_storage
from seals_al.storage.base import NotFoundError
from seals_al.storage.files import file_version, parse_manifest
from seals_al.storage.uris import default_cache_dir, is_remote, local_path, split_uri
from seals_al.store import MANIFEST, EmbeddingStore, RowLookup

FORMAT = "seals-prepared/2"
# Read with a published version's listing, in one batch: what every stage opens it with.
PRELOAD = ("manifest.json", "eval_items.npy", "eval_truth.npy", "ids.hash.sample.npy")
U, EVAL = 0, 1


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
        previous = find_prepared(key, self.shared, self.access, self.cache_dir)
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
        wanted = columns.hash64(ids)
        found = np.full(len(ids), -1, np.int64)
        if not len(ids) or not len(hashes):
            return found
        at = np.minimum(search_sorted(hashes, wanted, self._hash_sample), len(hashes) - 1)
        # The usual case in three batched reads: the hash there, its item, that item's id.
        hit = np.flatnonzero(read_rows([(hashes, at)])[0] == wanted)
        items = np.asarray(read_rows([(order, at[hit])])[0], np.int64)
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


def find_prepared(key: str, shared: str | None, access: str, cache_dir: str | Path | None) -> Prepared | None:
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
