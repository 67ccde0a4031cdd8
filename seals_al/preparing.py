"""Preparing a data version (seals_al.prepared): found in this machine's cache or where it is
published, else written once (the items' columns, lookups by id, the store embedded, imported or
grown from an earlier one) and published for every later process."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seals_al import columns
from seals_al.arrays import sample_of
from seals_al.columns import Strings
from seals_al.errors import SealsError, shown
from seals_al.folders import LocalFolder, open_folder
from seals_al.items import Items
from seals_al.prepared import FORMAT, Prepared, data_version, find_prepared
from seals_al.published import check_target, materialize, publish
from seals_al.published import version as remote_version
from seals_al.settings import DataConfig
from seals_al.storage import local_file
from seals_al.storage.files import atomic_dir, write_json_atomic
from seals_al.storage.uris import default_cache_dir, is_remote, local_path
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import MANIFEST, EmbeddingStore, rows_digest


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
    found = find_prepared(key, shared, access, config.cache_dir)
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
        hashes = columns.hash64(ids)
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
