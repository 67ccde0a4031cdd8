"""Index directories, what ``seals-al build-index`` writes: one index file, IVF lists merged on
disk, or shards searched together, with a manifest of the build parameters, what the index was
built from (store and rows digests) and its measured recall."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import faiss
import numpy as np

from seals_al.errors import SealsError
from seals_al.folders import open_folder
from seals_al.index.build import add_rows, due_for_training, empty_index, set_search_parameters, train
from seals_al.index.recall import measure_recall
from seals_al.published import output_folder, read_manifest_at
from seals_al.settings import DEFAULT_FACTORY, DEFAULT_K, LAYOUTS
from seals_al.storage.files import atomic_dir, check_replaceable, read_manifest, write_json_atomic
from seals_al.storage.uris import is_remote
from seals_al.store import EmbeddingStore, rows_digest

INDEX_FORMAT = "seals-index/1"


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
    k: int = DEFAULT_K,
    seed: int = 0,
    progress: bool = True,
    beam_args: Sequence[str] | None = None,
    work_parent: str | None = None,
) -> dict:
    """Build an index over every row of a store into a directory with a manifest.

    Layouts: ``single`` (one index file); ``ondisk`` (IVF only: one index per shard of rows, their
    inverted lists merged into ``index.ivfdata`` with faiss.contrib.ondisk and memory-mapped at
    query time, so the lists never need to fit in RAM); ``shards`` (one index per shard of rows,
    searched together with faiss.IndexShards, which merges each query's top k). The vectors are
    read a chunk at a time; IVF is trained once on a seeded sample and every shard reuses it.

    Args:
        store: the embeddings.
        out_dir: the index directory (an earlier index there is replaced whole; a folder holding
            anything else is refused).
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
        beam_args: Beam pipeline options: with them (even none), the index is trained and the rows
            encoded by Beam workers (:mod:`seals_al.index.build_pipeline`; IVF only), reading the
            store where it is published (``store.uri``); None: in this process.
        work_parent: where the Beam workers' scratch folder goes (gs:// for workers on other
            machines); default: this machine's temporary folder.

    Returns:
        The manifest written to ``manifest.json``.
    """
    if layout not in LAYOUTS:
        raise SealsError(f"unknown index layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    check_replaceable(out_dir, INDEX_FORMAT)  # before training, not after
    search_params = dict(search_params or {})
    started = time.perf_counter()
    row_ids = store.row_ids if row_ids is None else np.sort(np.asarray(row_ids, dtype=np.int64))
    if layout == "ondisk":
        empty = empty_index(store.dim, factory)  # kept while ivf, a view into it, is read
        ivf = faiss.try_extract_index_ivf(empty)
        if ivf is None:
            raise SealsError(f"the ondisk layout needs an IVF index; {factory!r} is not one")
        if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan):  # refused now, not after the build
            raise SealsError(
                f"the ondisk layout cannot hold the fast-scan index {factory!r} (faiss merges plain "
                "inverted lists on disk, not fast-scan's packed blocks); use the single or shards layout"
            )
    with ExitStack() as stack:
        if beam_args is None:
            trained = empty_index(store.dim, factory)
            train(trained, store, row_ids, train_size, seed)

            def filled(start: int, stop: int, desc: str) -> faiss.Index:
                index = faiss.clone_index(trained)
                add_rows(index, store, row_ids[start:stop], progress=progress, desc=desc)
                return index
        else:
            from seals_al.index.build_pipeline import encode_with_beam
            from seals_al.storage import work_folder

            work = stack.enter_context(work_folder(work_parent or tempfile.gettempdir()))
            encoded = encode_with_beam(
                store.uri, row_ids, store.dim, factory, work, train_size=train_size, seed=seed,
                beam_args=beam_args, progress=progress,
            )  # fmt: skip
            trained, filled = encoded.trained, encoded.filled
        tmp = stack.enter_context(atomic_dir(out_dir, INDEX_FORMAT))
        files = _write_layout(tmp, trained, filled, len(row_ids), layout, shard_rows, factory)
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
            "store": store.uri,
            "source": _index_source(store, row_ids, factory, layout, search_params),
            "build_seconds": time.perf_counter() - started,
        }
        if beam_args is not None:  # how long the workers took (training and encoding)
            manifest["workers_seconds"] = encoded.seconds
            manifest["train_seconds"] = encoded.training["seconds"]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if recall_queries:
        index = open_index_dir(out_dir)
        manifest["recall"] = measure_recall(index, store, k=k, queries=recall_queries, seed=seed)
        write_json_atomic(Path(out_dir) / "manifest.json", manifest)
    return manifest


def _write_layout(
    out: Path,
    trained: faiss.Index,
    filled: Callable[[int, int, str], faiss.Index],
    rows: int,
    layout: str,
    shard_rows: int,
    factory: str,
) -> list[str]:
    """Write the layout's files into ``out``: ``filled(start, stop, label)`` is a new index holding
    the rows at those positions (added in this process or from Beam workers' codes), ``trained``
    the empty trained index (the ondisk layout's base).

    Returns:
        The file names written.
    """
    if layout == "single":
        faiss.write_index(filled(0, rows, f"index {factory}"), str(out / "index.faiss"))
        return ["index.faiss"]
    files = []
    starts = range(0, rows, shard_rows)
    for n, start in enumerate(starts):
        shard = filled(start, min(start + shard_rows, rows), f"shard {n + 1}/{len(starts)}")
        faiss.write_index(shard, str(out / f"shard-{n:05d}.faiss"))
        files.append(f"shard-{n:05d}.faiss")
        del shard
    if layout == "shards":
        return files
    from faiss.contrib.ondisk import merge_ondisk

    merged = faiss.clone_index(trained)
    merge_ondisk(merged, [str(out / f) for f in files], str(out / "index.ivfdata"))
    faiss.write_index(merged, str(out / "index.faiss"))
    for f in files:
        (out / f).unlink()
    return ["index.faiss", "index.ivfdata"]


def _index_source(
    store: EmbeddingStore, row_ids: np.ndarray, factory: str, layout: str, params: dict
) -> dict:
    """What an index directory was built from: the store's shard checksums and the rows."""
    return {
        "store_sha256": store.digest(),
        "rows_sha256": rows_digest(row_ids),
        "factory": factory,
        "layout": layout,
        "search_params": params,
    }


def ensure_index_dir(
    store: EmbeddingStore, out_dir: str | Path, factory: str = DEFAULT_FACTORY, **options
) -> tuple[dict, bool]:
    """Build the index directory unless one from the same store, rows, factory, layout and
    search parameters is already there (re-runs of a pipeline skip the build; only its manifest
    is read to decide).

    Args:
        store: the embeddings.
        out_dir: the index directory, local or gs://.
        factory: faiss index_factory string.
        **options: as for :func:`build_index_dir`.

    Returns:
        (the manifest, whether it was already there).
    """
    manifest = read_manifest_at(out_dir, INDEX_FORMAT)
    if manifest is not None:
        row_ids = options.get("row_ids")
        row_ids = store.row_ids if row_ids is None else np.asarray(row_ids, dtype=np.int64)
        wanted = _index_source(
            store, row_ids, factory, options.get("layout", "single"), dict(options.get("search_params") or {})
        )
        if manifest.get("source") == wanted:
            return manifest, True
        new_rows = _appended_rows(store, row_ids, manifest, wanted)
        if new_rows is not None:
            progress = options.get("progress", True)
            return extend_index_dir(store, out_dir, manifest, new_rows, wanted, progress=progress), False
    return publish_index_dir(store, out_dir, factory, **options), False


def _appended_rows(
    store: EmbeddingStore, row_ids: np.ndarray, manifest: dict, wanted: dict
) -> np.ndarray | None:
    """The rows to add when the index can be extended instead of built again: a single-file index
    of the same factory, layout and search parameters over the store this one was appended to,
    whose rows are exactly the wanted ones that are not appended, and not due for training again
    (:func:`~seals_al.index.build.due_for_training`); else None."""
    built = manifest.get("source", {})
    same = all(built.get(key) == wanted[key] for key in ("factory", "layout", "search_params"))
    extra = store.manifest.get("extra", {})
    if not same or built.get("layout") != "single" or extra.get("appended_to") != built.get("store_sha256"):
        return None
    if "base_count" not in extra:
        return None
    appended = np.asarray(store.row_ids[int(extra["base_count"]) :], dtype=np.int64)
    row_ids = np.sort(np.asarray(row_ids, dtype=np.int64))
    new = np.intersect1d(row_ids, appended, assume_unique=True)  # each a set of rows
    if rows_digest(np.setdiff1d(row_ids, new, assume_unique=True)) != built.get("rows_sha256"):
        return None  # the old rows of U changed (a split moved): build it again
    if due_for_training(store.dim, wanted["factory"], len(row_ids), _trained_on(manifest)):
        return None  # grown too far from what it was trained on: train it again
    return new


def _trained_on(manifest: dict) -> int:
    """The rows an index was trained on: all it held when built, until it was extended."""
    return int(manifest.get("trained_on_rows", manifest["ntotal"]))


def extend_index_dir(
    store: EmbeddingStore,
    uri: str | Path,
    manifest: dict,
    new_rows: np.ndarray,
    source: dict,
    *,
    progress: bool = True,
) -> dict:
    """The published single-file index at ``uri`` with ``new_rows`` added (its IVF quantizer and
    PQ codebooks as trained; an HNSW graph or a flat index by adding), published again. The
    manifest records ``grown_from``: the previous manifest's sha256 and what it was built from, so
    a neighbour graph of that index can be extended rather than built again
    (:func:`seals_al.index.graph_cache.cached_neighbour_graph`). Recall is not measured again."""
    import hashlib

    from seals_al.published import materialize, read_file

    started = time.perf_counter()
    previous = read_file(uri, "manifest.json")
    index = faiss.read_index(str(materialize(uri, "an index directory", progress=progress) / "index.faiss"))
    add_rows(index, store, new_rows, progress=progress, desc="index: new rows")
    out_manifest = {k: v for k, v in manifest.items() if k != "recall"}
    out_manifest |= {
        "ntotal": int(index.ntotal),
        "store": store.uri,
        "source": source,
        "grown_from": {
            "manifest_sha256": hashlib.sha256(previous).hexdigest(),
            "rows_sha256": manifest["source"]["rows_sha256"],
            "store_sha256": manifest["source"]["store_sha256"],
            "ntotal": manifest["ntotal"],
        },
        "trained_on_rows": _trained_on(manifest),
        "build_seconds": time.perf_counter() - started,
    }
    with output_folder(uri, INDEX_FORMAT) as out, atomic_dir(out, INDEX_FORMAT) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        (tmp / "manifest.json").write_text(json.dumps(out_manifest, indent=2) + "\n")
    return out_manifest


def publish_index_dir(
    store: EmbeddingStore, uri: str | Path, factory: str = DEFAULT_FACTORY, **options
) -> dict:
    """:func:`build_index_dir` to a local folder or gs:// (built locally, then published through
    :mod:`seals_al.published`); a target holding something else is refused before training."""
    if options.get("beam_args") is not None and is_remote(uri):  # the workers' scratch, beside it
        options.setdefault("work_parent", f"{str(uri).rstrip('/')}.work")
    with output_folder(uri, INDEX_FORMAT) as out:
        return build_index_dir(store, out, factory, **options)


def read_index_manifest(uri: str | Path, cache_dir: str | Path | None = None) -> bytes:
    """An index directory's manifest.json, local or gs:// (read with its listing, without the
    index): what a graph over the index is named by."""
    folder = open_folder(str(uri), cache_dir, ("manifest.json",))
    if folder is None or not folder.has("manifest.json"):
        raise SealsError(f"{uri}: not an index directory (no manifest.json)")
    return folder.read_bytes("manifest.json")


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
