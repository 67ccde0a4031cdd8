"""Prepared data: the item table's columns in memory-mapped files, read by position or by id,
prepared once per data version, so that a round reads only the rows it touches, whatever the size
of U (docs/ARCHITECTURE.md).

A data version is the items file and the embeddings as they are now: their sizes and modification
times (a gs:// object's generation), the embeddings store's manifest, and the column settings.
Its prepared folder lives under the cache directory, named by a digest of all that::

    manifest.json        format, what it was prepared from, counts, the store, truth values
    ids.offsets.npy      int64 [n + 1]: item i's id is ids.bytes[offsets[i]:offsets[i + 1]] (UTF-8)
    ids.bytes
    ids.hash.npy         uint64, sorted: 64-bit BLAKE2b of each id, for lookups by id
    ids.order.npy        int64: the item position of each hash
    texts.offsets.npy    the texts, the same way (when the table has a text column)
    texts.bytes
    eval.npy             bool per item: in the evaluation split
    eval_items.npy       int64: the positions of the evaluation split
    truth.npy            int32 per item: index into manifest["truth"]["values"] (with a truth column)
    row_ids.npy          int64 per item: its row id in the store    } absent when every item's row id
    rows.sorted.npy      int64: those row ids sorted                } is its position (embedded or
    rows.order.npy       int64: the item position of each           } imported here)
    store.sorted.npy     int64: the store's row ids sorted, and     } absent when the store declares
    store.order.npy      int64: their storage positions             } its row ids to be its positions

Item positions follow the items file's row order. Opening maps the files and reads the manifest;
a lookup of m ids reads O(m log n) bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from seals_al.arrays import ArrayFile, open_array, pread_exact, search_sorted, sparse_sample
from seals_al.errors import SealsError, shown
from seals_al.items import Items, item_files
from seals_al.published import is_remote, materialize_if_published
from seals_al.published import version as remote_version
from seals_al.settings import DataConfig
from seals_al.storage import (
    atomic_dir,
    default_cache_dir,
    file_version,
    local_file,
    open_storage,
    read_manifest,
    split_uri,
    write_json_atomic,
)
from seals_al.store import MANIFEST, EmbeddingStore, RowLookup, rows_digest

FORMAT = "seals-prepared/1"
U, EVAL = 0, 1
SPAN_READ_BYTES = 1 << 20  # strings within this many bytes are read in one go, however few


def _hash64(values: Sequence[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in values),
        dtype=np.uint64,
        count=len(values),
    )


class Strings:
    """A column of strings: UTF-8 bytes and their offsets; read by position: each string with its
    own positioned read, or, when the strings asked for fill at least half of the bytes they span
    or that span is at most :data:`SPAN_READ_BYTES` (a scan of every item, a run of new items),
    the span in one read."""

    def __init__(self, folder: Path, name: str, access: str = "rows"):
        self.offsets = open_array(folder / f"{name}.offsets.npy", access)
        self._path = folder / f"{name}.bytes"
        self._fd = os.open(self._path, os.O_RDONLY)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @staticmethod
    def write(folder: Path, name: str, values: Sequence[str]) -> None:
        encoded = [v.encode() for v in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        np.save(folder / f"{name}.offsets.npy", offsets)
        (folder / f"{name}.bytes").write_bytes(b"".join(encoded))

    def at(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        positions = np.asarray(positions, np.int64)
        n = len(positions)
        if not n:
            return []
        bounds = self.offsets[np.concatenate([positions, positions + 1])]
        starts, stops = bounds[:n], bounds[n:]
        low, high = int(bounds.min()), int(bounds.max())
        if high - low <= max(SPAN_READ_BYTES, 2 * int((stops - starts).sum())):
            span = bytearray(high - low)  # the strings fill at least half of it: one read
            pread_exact(self._fd, memoryview(span), low, self._path)
            pairs = zip((starts - low).tolist(), (stops - low).tolist(), strict=True)
            return [span[a:b].decode() for a, b in pairs]
        out = []
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            data = bytearray(stop - start)
            if data:
                pread_exact(self._fd, memoryview(data), start, self._path)
            out.append(data.decode())
        return out


def data_version(config: DataConfig) -> dict:
    """What identifies the data as it is now, read without reading the data: the items file's size
    and modification time (a gs:// object's generation), the embeddings' (a store's manifest), and
    every column setting. Any change makes a new version, prepared again."""

    def stat(uri: str) -> str:
        if is_remote(uri):
            published = remote_version(uri)  # a folder published there (a store), by its listing
            if published is not None:
                return published
            parent, name = split_uri(uri)
            return open_storage(parent).version(name)
        path = Path(uri.removeprefix("file://"))
        if path.is_dir():  # a store: its manifest names every shard's checksum; the id table by stat
            manifest = path / MANIFEST
            if not manifest.is_file():
                raise SealsError(f"{path}: not an embeddings store (no {MANIFEST})")
            data = manifest.read_bytes()
            ids = path / json.loads(data).get("id_table", "ids.parquet")
            return hashlib.sha256(data).hexdigest() + " " + file_version(ids)
        return file_version(path)

    files = item_files(config.data)
    return {
        "format": FORMAT,
        "data": config.data,
        # One file: its version, as always; a folder or glob: each file's name and version.
        "data_version": stat(config.data)
        if files == [config.data]
        else "; ".join(f"{uri} {stat(uri)}" for uri in files),
        "embeddings": config.embeddings,
        "embeddings_version": stat(config.embeddings) if config.embeddings else None,
        "columns": [config.id_column, config.text_column, config.truth_column, config.split_column],
        "embeddings_column": config.embeddings_column,
        "eval_split": config.eval_split,
    }


@dataclass(frozen=True)
class Prepared:
    """A prepared data version, opened: the item columns, the lookups between ids, item positions
    and row ids, and the embeddings store."""

    folder: Path
    manifest: dict
    store: EmbeddingStore
    access: str = "rows"  # how the columns and the store are read (seals_al.arrays.ACCESS)
    _arrays: dict[str, np.ndarray | ArrayFile] = field(default_factory=dict, repr=False, compare=False)
    _columns: dict[str, Strings] = field(default_factory=dict, repr=False, compare=False)

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path, access: str = "rows") -> Prepared:
        """Open a prepared folder; ``access``: ``rows`` for a one-round process (each lookup reads
        just its rows), ``mapped`` for a long-lived one, ``ram`` to read it all in at once."""
        manifest = read_manifest(folder, FORMAT, "a prepared data set")
        lookup = None
        if (folder / "store.sorted.npy").is_file():
            lookup = RowLookup.presorted(
                open_array(folder / "store.sorted.npy", access),
                open_array(folder / "store.order.npy", access),
                manifest["store"],
            )
        store = EmbeddingStore.open(manifest["store"], lookup=lookup, access=access)
        if store.digest() != manifest["store_digest"]:
            raise SealsError(f"{manifest['store']}: the store changed since {folder} was prepared")
        return cls(folder, manifest, store, access)

    @property
    def key(self) -> str:
        """The data version: the name of its prepared folder (a digest of what identifies it)."""
        return self.folder.name

    def changes_since(self, key: str, store_digest: str) -> tuple[int, int] | None:
        """(items added, items gone) since the prepared version ``key`` whose store had
        ``store_digest``: counted by id while that version is still prepared in this cache; else,
        when this store was appended to that store, its appended rows and none gone; else None
        (not known on this machine)."""
        if key == self.key:
            return 0, 0
        try:
            previous = Prepared.open(self.folder.parent / key)
        except (SealsError, OSError):
            previous = None  # pruned, or prepared on another machine
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
            self._arrays[name] = open_array(self.folder / f"{name}.npy", self.access)
        return self._arrays[name]

    def _strings(self, name: str) -> Strings:
        if name not in self._columns:
            self._columns[name] = Strings(self.folder, name, self.access)
        return self._columns[name]

    @cached_property
    def _hash_sample(self) -> np.ndarray | None:
        """The id hashes' sparse sample, read once per process."""
        return sparse_sample(self._array("ids.hash"))

    @cached_property
    def _item_lookup(self) -> RowLookup:
        """Item positions by row id, built once per process (its sparse sample read once)."""
        unknown = "row id {} is not an item"
        if self.manifest["row_ids_are_positions"]:
            return RowLookup.positions(self.count, self.folder, unknown)
        return RowLookup.presorted(
            self._array("rows.sorted"), self._array("rows.order"), self.folder, unknown
        )

    @property
    def eval_items(self) -> np.ndarray:
        """Positions of the evaluation split (read whole: it is what a round evaluates on)."""
        return self._array("eval_items")[:]

    def eval_truth(self, concept: str) -> np.ndarray:
        """1 where the evaluation split's truth is the concept, else 0, in :attr:`eval_items` order
        (one read: the split's truth codes are stored together)."""
        return self._is(self._array("eval_truth")[:], concept)

    def ids_at(self, items: np.ndarray) -> list[str]:
        return self._strings("ids").at(items)

    def texts_at(self, items: np.ndarray) -> list[str]:
        """Texts by item position ("" for every item when the table has none)."""
        return self._strings("texts").at(items) if self.has_texts else [""] * len(items)

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
        at = np.minimum(search_sorted(hashes, wanted, self._hash_sample), len(hashes) - 1)
        found = np.full(len(ids), -1, np.int64)
        if not len(ids) or not len(hashes):
            return found
        # The usual case in three batched reads: the hash there, its item, that item's id.
        hit = np.flatnonzero(hashes[at] == wanted)
        items = np.asarray(order[at[hit]], np.int64)
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
        return items if self.manifest["row_ids_are_positions"] else self._array("row_ids")[items]

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
        """The whole table in memory (every column read: for simulations and seed draws, not rounds)."""
        everything = np.arange(self.count)
        values = self.truth_values
        truth = None if values is None else np.asarray(values, dtype=object)[self._array("truth")[:]]
        source, columns = self.manifest["source"], self.manifest["source"]["columns"]
        return Items(
            source["data"],
            self.ids_at(everything),
            self.texts_at(everything) if self.has_texts else None,
            truth,
            self._array("eval")[:],
            columns[2],
            source["eval_split"],
        )


class IdSet:
    """The ids of a prepared data set (or of its U) as a container, for label checks: each test
    looks one id up, so checking a label file reads only its own ids."""

    def __init__(self, prepared: Prepared, in_u: bool = False):
        self.prepared = prepared
        self.in_u = in_u

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self.prepared.contains([item_id], in_u=self.in_u)[0])


def prepare(
    config: DataConfig, items: Items | None = None, progress: bool = True, access: str = "rows"
) -> Prepared:
    """The prepared folder of the data as it is now: opened if an earlier run prepared it, else
    prepared first (items read and checked, texts embedded or embeddings imported, columns written).

    Args:
        config: the data settings.
        items: the table, when the caller has read it already.
        progress: show progress while embedding.
        access: how it is read (:meth:`Prepared.open`).

    Returns:
        The prepared data, opened.
    """
    version = data_version(config)
    key = hashlib.sha256(json.dumps(version, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(config.cache_dir or default_cache_dir()) / "prepared" / key
    if (folder / "manifest.json").is_file():
        try:
            return Prepared.open(folder, access)
        except SealsError:
            pass  # its store was removed or replaced: prepare again
    items = items or Items.load(config)
    lineage = _lineage(config)
    _write(folder, config, version, items, progress, _grown_from(lineage, config, items))
    write_json_atomic(lineage, {"prepared": key})  # last: a crash before it leaves the old pointer
    return Prepared.open(folder, access)


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
        previous = Prepared.open(lineage.parent.parent / str(key))
    except (SealsError, OSError, ValueError, KeyError, TypeError):
        return None
    if not previous.has_texts:
        return None
    from seals_al.encoder import TEXT_MODEL, TEXT_MODEL_DIM

    if (previous.store.model, previous.store.dim) != (TEXT_MODEL, TEXT_MODEL_DIM):
        return None  # embedded by another model: one store holds one model's vectors
    everything = np.arange(previous.count)
    old_ids = previous.ids_at(everything)
    where = {item_id: i for i, item_id in enumerate(items.ids)}
    if any(item_id not in where for item_id in old_ids):
        return None
    for item_id, text in zip(old_ids, previous.texts_at(everything), strict=True):
        now = items.texts[where[item_id]]
        if now != text:
            raise SealsError(
                f"{config.data}: the text of id {shown(item_id)} changed since it was embedded "
                f"(was {shown(text)}, now {shown(now)}); an item's text is fixed once embedded: "
                f"give the new text a new id, or remove {lineage} to embed the data whole"
            )
    return previous.store


def embeddings_path(config: DataConfig) -> Path:
    """A local path for the configured embeddings: a gs:// store materialized in the cache, a
    gs:// file (.npy, .parquet) downloaded, a local one as it is."""
    uri = str(config.embeddings)
    cache = config.cache_dir or default_cache_dir()
    return materialize_if_published(uri, cache) or local_file(uri, cache)


def _write(
    folder: Path, config: DataConfig, version: dict, items: Items, progress: bool, base: EmbeddingStore | None
) -> None:
    from seals_al.embed.local import embed_texts, import_embeddings
    from seals_al.encoder import TEXT_MODEL_DIM
    from seals_al.index.build import check_factory

    if config.embeddings is None:
        check_factory(TEXT_MODEL_DIM, config.index_factory)  # a bad string fails before the embedding
        store = embed_texts(items.ids, items.texts, cache_dir=config.cache_dir, progress=progress, base=base)
    else:
        store = import_embeddings(
            embeddings_path(config), items.ids, cache_dir=config.cache_dir, column=config.embeddings_column
        )
    check_factory(store.dim, config.index_factory)
    row_ids = store.row_ids_of(items.ids)
    identity = bool(np.array_equal(row_ids, np.arange(len(row_ids))))
    store_positions = store.manifest.get("row_ids") == "positions"
    truth = None
    with atomic_dir(folder, FORMAT) as tmp:
        Strings.write(tmp, "ids", items.ids)
        hashes = _hash64(items.ids)
        order = np.argsort(hashes, kind="stable")
        np.save(tmp / "ids.hash.npy", hashes[order])
        np.save(tmp / "ids.order.npy", order.astype(np.int64))
        if items.texts is not None:
            Strings.write(tmp, "texts", items.texts)
        np.save(tmp / "eval.npy", items.is_eval)
        np.save(tmp / "eval_items.npy", np.flatnonzero(items.is_eval).astype(np.int64))
        if items.truth is not None:
            values, codes = np.unique(items.truth.astype(str), return_inverse=True)
            np.save(tmp / "truth.npy", codes.astype(np.int32))
            np.save(tmp / "eval_truth.npy", codes[items.is_eval].astype(np.int32))
            u_counts = np.bincount(codes[~items.is_eval], minlength=len(values))
            truth = {"values": values.tolist(), "u_counts": u_counts.tolist()}
        if not identity:
            np.save(tmp / "row_ids.npy", row_ids)
            rows_order = np.argsort(row_ids, kind="stable")
            np.save(tmp / "rows.sorted.npy", row_ids[rows_order])
            np.save(tmp / "rows.order.npy", rows_order.astype(np.int64))
        if not store_positions:
            store_order = np.argsort(store.row_ids, kind="stable")
            np.save(tmp / "store.sorted.npy", store.row_ids[store_order])
            np.save(tmp / "store.order.npy", store_order.astype(np.int64))
        manifest = {
            "format": FORMAT,
            "source": version,
            "items": len(items.ids),
            "u_items": int((~items.is_eval).sum()),
            "u_rows_sha256": rows_digest(row_ids[~items.is_eval]),
            "texts": items.texts is not None,
            "truth": truth,
            "row_ids_are_positions": identity,
            "store": str(store.path.resolve()),
            "store_digest": store.digest(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
