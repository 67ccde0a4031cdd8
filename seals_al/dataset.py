"""A data set ready for rounds: the prepared items and embeddings (:mod:`seals_al.prepared`), the
index over U and the neighbour lists the pool reads. Prepared once per data version; any number of
rounds, concepts and campaigns share it (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seals_al.errors import SealsError
from seals_al.items import Items
from seals_al.prepared import IdSet, Prepared
from seals_al.preparing import prepare
from seals_al.settings import DEFAULT_FACTORY, DataConfig
from seals_al.storage.uris import default_cache_dir
from seals_al.store import EmbeddingStore, RowLookup

if TYPE_CHECKING:  # faiss and the index modules are imported when an index or graph is used
    import faiss

    from seals_al.index.graph import NeighbourGraph


@dataclass
class Dataset:
    """The prepared items and embeddings (:mod:`seals_al.prepared`) and the index over U (every row
    outside the evaluation split).

    Opening is cheap whatever the size: the columns are memory-mapped and every per-row array is
    read on first use; the index is built on first use (with a cached neighbour graph a run never
    needs it). A round reads only the ids, rows and texts it touches.
    """

    config: DataConfig
    prepared: Prepared
    progress: bool = True
    access: str = "rows"  # how files are read: seals_al.arrays.ACCESS
    _items: Items | None = None
    _u_rows: np.ndarray | None = None
    _index: faiss.Index | None = None
    _graphs: dict[int, NeighbourGraph] = field(default_factory=dict)
    _u_density: dict[int, np.ndarray] = field(default_factory=dict)
    _removed: tuple[frozenset[str], np.ndarray] | None = None
    _known_rows: dict[str, int] = field(default_factory=dict)  # remember(): id -> row id
    _known_ids: dict[int, str] = field(default_factory=dict)  # and back
    _index_manifest_bytes: bytes | None = None
    _eval_vectors: np.ndarray | None = None

    @classmethod
    def prepare(
        cls,
        config: DataConfig,
        items: Items | None = None,
        progress: bool = True,
        access: str = "rows",
        ram_budget_mb: int = 0,
        derived: str | None = None,
    ) -> Dataset:
        """Open the data as it is now, preparing it first if no earlier run did (reading and
        checking the items, embedding or importing, checking the index factory).

        Args:
            config: the data settings.
            items: the item table, when the caller has read it already (used only to prepare).
            progress: show progress bars for one-off work.
            access: how the store, the columns and the neighbour graph are read
                (:data:`seals_al.arrays.ACCESS`): ``rows`` (default) reads just the rows a step
                touches, for a process that runs one round or stage; ``mapped`` maps the files,
                for one that runs many rounds; ``ram`` maps them with every page read in at once.
            ram_budget_mb: open them as ``ram`` anyway when the embeddings take at most this many
                MB (a simulation: memory speed from its first round).
            derived: where a campaign on gs:// publishes what it builds from U for its other
                tasks (:func:`seals_al.preparing.shared_root`), when the data has no published
                store to keep it beside.
        """
        prepared = prepare(config, items, progress, access, derived)
        if access != "ram" and prepared.store_bytes <= ram_budget_mb * 2**20:
            access = "ram"
            prepared = prepared.reopen(access)
        return cls(config, prepared, progress, access, items)

    @property
    def store(self) -> EmbeddingStore:
        return self.prepared.store

    @property
    def pool_marker(self) -> str | None:
        """What a saved pool records of the data so that it is restored only over the same data:
        None for data that never grew and has no tombstoned item (the pool is as it always was);
        else the digest of U's rows once items were appended to the embeddings
        (:func:`seals_al.embed.local.embed_texts` with a base), and the digest of the tombstoned
        rows. A pool saved under another marker is built again from the labeled and selected
        examples, as if from scratch over the data as it is."""
        grown = "appended_to" in self.store.manifest.get("extra", {})
        marker = self.prepared.u_digest if grown else None
        rows = self.removed_rows()
        if len(rows):
            removed = hashlib.sha256(np.sort(rows).astype("<i8").tobytes()).hexdigest()[:32]
            marker = f"{marker or ''} removed {removed}".strip()
        return marker

    @property
    def cache_dir(self) -> Path:
        """This machine's cache directory (prepared data, indexes, graphs, pools)."""
        return Path(self.config.cache_dir or default_cache_dir())

    @property
    def u_rows(self) -> np.ndarray:
        """Global row ids of U (read from the split column on first use: global mode and set-up)."""
        if self._u_rows is None:
            self._u_rows = self.prepared.row_ids_at(self.prepared.u_items())
        return self._u_rows

    @property
    def u_count(self) -> int:
        return self.prepared.u_count

    @property
    def eval_rows(self) -> np.ndarray:
        """Global row ids of the evaluation split (never selectable)."""
        return self.prepared.eval_rows()

    def eval_vectors(self) -> np.ndarray:
        """The evaluation split's vectors, in :attr:`eval_rows` order (one read, once)."""
        if self._eval_vectors is None:
            self._eval_vectors = self.prepared.eval_vectors()
        return self._eval_vectors

    @property
    def has_truth(self) -> bool:
        return self.prepared.truth_values is not None

    def items(self) -> Items:
        """The whole item table in memory: for simulations and seed draws, never for a round."""
        if self._items is None:
            self._items = self.prepared.items()
        return self._items

    # -- items that left: the tombstone list ----------------------------------------------------
    def _tombstones(self) -> tuple[frozenset[str], np.ndarray]:
        """(every id of the tombstone list, item positions of those still in the data); read once
        per process (a round reads it once, at its start)."""
        if self._removed is None:
            from seals_al.items import read_removed

            ids = read_removed(self.config.removed, self.cache_dir) if self.config.removed else frozenset()
            found = self.prepared.find(sorted(ids)) if ids else np.empty(0, np.int64)
            self._removed = ids, np.sort(found[found >= 0])
        return self._removed

    @property
    def removed_ids(self) -> frozenset[str]:
        """Every id of the tombstone list (``removed``), in the data or not; empty without one."""
        return self._tombstones()[0]

    @property
    def removed_items(self) -> np.ndarray:
        """Item positions of the tombstoned ids that are still in the data (ascending)."""
        return self._tombstones()[1]

    def removed_rows(self) -> np.ndarray:
        """Global row ids of the tombstoned items still in the data: never a candidate again."""
        return self.prepared.row_ids_at(self.removed_items)

    # -- by id -------------------------------------------------------------------------------------
    def remember(self, ids: Sequence[str], row_ids: np.ndarray, vectors: np.ndarray | None = None) -> None:
        """Ids, row ids (and vectors) this process already knows, for this data version (what a
        campaign's last round saved of its examples): looked up and read from here, not from the
        prepared columns and the store."""
        rows = np.asarray(row_ids, np.int64).tolist()
        self._known_rows.update(zip(ids, rows, strict=True))
        self._known_ids.update(zip(rows, ids, strict=True))
        if vectors is not None:
            self.store.remember(np.asarray(rows, np.int64), vectors)

    def row_ids_of(self, ids: Sequence[str], where: str = "") -> np.ndarray:
        """Global row ids of external ids; an unknown id is an error naming it (and ``where``)."""
        known = self._known_rows
        rest = [i for i in ids if i not in known]
        if rest:
            found = dict(
                zip(rest, self.prepared.row_ids_at(self.prepared.items_of(rest, where)).tolist(), strict=True)
            )
            return np.asarray([known[i] if i in known else found[i] for i in ids], np.int64)
        return np.asarray([known[i] for i in ids], np.int64)

    def external_ids(self, row_ids: np.ndarray) -> list[str]:
        return self.ids_and_texts(row_ids, np.empty(0, np.int64))[0]

    def texts_of(self, row_ids: np.ndarray) -> list[str]:
        """Texts of rows ("" for each when the table has no text column)."""
        return self.prepared.texts_at(self.prepared.items_at_rows(row_ids))

    def ids_and_texts(self, id_rows: np.ndarray, text_rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The ids of some rows and the texts of others, read together (on gs://, two round
        trips for them all); ids this process remembers are not read."""
        id_rows, text_rows = np.asarray(id_rows, np.int64), np.asarray(text_rows, np.int64)
        known, with_text = self._known_ids, set(text_rows.tolist())
        wanted = [
            r
            for r in dict.fromkeys([*text_rows.tolist(), *id_rows.tolist()])
            if r in with_text or r not in known
        ]
        items = self.prepared.items_at_rows(np.asarray(wanted, np.int64))
        ids, texts = self.prepared.ids_and_texts_at(items) if with_text else (self.prepared.ids_at(items), [])
        found_ids, found_texts = dict(zip(wanted, ids, strict=True)), dict(zip(wanted, texts, strict=False))
        named = [known[r] if r in known else found_ids[r] for r in id_rows.tolist()]
        return named, [found_texts[r] for r in text_rows.tolist()]

    def id_set(self, in_u: bool = False) -> IdSet:
        """Every item id (of U, with ``in_u``) as a container that looks each id up."""
        return IdSet(self.prepared, in_u)

    def eval_truth(self, concept: str) -> np.ndarray:
        """The truth of :attr:`eval_rows` (1 for the concept, else 0), read in one piece."""
        return self.prepared.eval_truth(concept)

    def truth(self, concept: str, rows: np.ndarray) -> np.ndarray:
        """1 where the label column equals the concept, else 0."""
        return self.prepared.truth_at(self.prepared.items_at_rows(rows), concept)

    def truth_of(self, ids: Sequence[str], concept: str) -> list[int]:
        """1 where the truth column equals the concept, else 0, for the given external ids."""
        return self.prepared.truth_at(self.prepared.items_of(ids), concept).tolist()

    def positives_in_u(self, concept: str) -> int:
        """Items of U whose truth is the concept (counted when the data was prepared)."""
        return self.prepared.truth_count_in_u(concept)

    @property
    def index(self) -> faiss.Index:
        from seals_al.index.build import build_index
        from seals_al.index.directory import open_index_dir

        if self._index is None:
            if self.config.index:
                self._index = open_index_dir(self.index_path)
                if self._index.d != self.store.dim:
                    raise SealsError(
                        f"{self.config.index}: index of dimension {self._index.d}, embeddings of "
                        f"dimension {self.store.dim}"
                    )
            else:
                self.check_factory()
                self._index = build_index(
                    self.scan_store(), self.u_rows, self.config.index_factory, progress=self.progress
                )
        return self._index

    def scan_store(self) -> EmbeddingStore:
        """The store to read every row of U from, several times over (an index or a graph
        build): the store itself on this machine, a published one copied into the cache first."""
        return self.store.local_copy(self.cache_dir, self.progress)

    @property
    def index_path(self) -> Path:
        """The configured index folder on this machine (a gs:// one materialized in the cache)."""
        from seals_al.published import materialize

        if not self.config.index:
            raise SealsError("no index is configured")
        return materialize(self.config.index, "an index directory", self.cache_dir, self.progress)

    @property
    def graphs_uri(self) -> str | None:
        """Where neighbour graphs are shared between machines: under a gs:// index, in its
        ``graphs/`` folder (the index's own listing does not name them); without an index, where
        this data's prepared versions are published (:func:`seals_al.preparing.shared_root`);
        else None: this machine's cache."""
        from seals_al.storage.uris import is_remote

        if self.config.index and is_remote(self.config.index):
            from seals_al.index.graph_cache import graphs_of_index

            return graphs_of_index(self.config.index)
        if not self.config.index and self.prepared.shared is not None:
            return f"{self.prepared.shared}/graphs"
        return None

    def _index_key(self) -> str:
        """What the cached graph depends on besides the rows: the factory (with the lists an IVF
        index probes), or the built index."""
        if not self.config.index:
            from seals_al.index.build import search_key

            return search_key(self.store.dim, self.config.index_factory)
        # The manifest alone: a round that reads a published graph never needs the index itself.
        manifest = self._index_manifest()
        source = json.loads(manifest).get("source", {})
        if source.get("rows_sha256") != self.prepared.u_digest:
            raise SealsError(
                f"{self.config.index}: the index was not built over U ({self.u_count:,} rows outside "
                f"the {self.config.eval_split!r} split); build it over those rows"
            )
        from seals_al.index.graph_cache import index_key

        return index_key(hashlib.sha256(manifest).hexdigest())

    def _index_base(self) -> tuple[str, str, str] | None:
        """(rows digest, store digest, key) of the index the configured one was extended from
        (seals_al.index.directory.extend_index_dir), whose graph this one's can grow from."""
        grown = json.loads(self._index_manifest()).get("grown_from")
        if not grown:
            return None
        from seals_al.index.graph_cache import index_key

        return grown["rows_sha256"], grown["store_sha256"], index_key(grown["manifest_sha256"])

    def _index_manifest(self) -> bytes:
        """The configured index's manifest.json (read once, with its listing when on gs://)."""
        if self._index_manifest_bytes is None:
            from seals_al.index.directory import read_index_manifest

            self._index_manifest_bytes = read_index_manifest(self.config.index, self.cache_dir)
        return self._index_manifest_bytes

    def check_factory(self) -> None:
        """A clear error for a factory string faiss refuses (the data may have been prepared with
        another one)."""
        from seals_al.index.build import check_factory

        check_factory(self.store.dim, self.config.index_factory)

    def neighbours(self, k: int, progress: bool = True) -> faiss.Index | NeighbourGraph:
        """Where the pool gets neighbour lists: the graph of U for this k (built once, cached in
        the cache directory), or the index itself when the graph is turned off."""
        from seals_al.index.graph_cache import cached_neighbour_graph

        if not self.config.knn_graph:
            return self.index
        if k not in self._graphs:
            self._graphs[k] = cached_neighbour_graph(
                lambda: self.index,
                self.store,
                lambda: self.u_rows,
                self.prepared.u_digest,
                self._index_key(),
                k,
                self.cache_dir,
                progress=progress,
                access=self.access,
                published=self.graphs_uri,
                keep_index=not self.config.index,  # a configured index is not this cache's to extend
                base_of=self._index_base if self.config.index else None,
                scan=self.scan_store,
            )
            if self.prepared.positions_are_rows and len(self._graphs[k]) == self.u_count:
                # U's rows are 0..n-1 but the evaluation split's: a row's place in the graph is
                # found without reading its rows.
                excluded = np.sort(self.eval_rows)
                self._graphs[k].use_lookup(
                    RowLookup.complement(
                        self.prepared.count, excluded, self._graphs[k].uri, "row id {} is not in the graph"
                    )
                )
        return self._graphs[k]

    def u_density(self, k: int, progress: bool = True) -> np.ndarray:
        """kNN density of every row of U (per storage position; computed once per k)."""
        from seals_al.index.graph import NeighbourGraph
        from seals_al.index.neighbours import knn_density, neighbour_density

        if k not in self._u_density:
            density = np.full(len(self.store), np.nan, dtype=np.float32)
            source = self.neighbours(k, progress)
            if isinstance(source, NeighbourGraph):
                values = neighbour_density(source.knn(self.u_rows, k)[0])
            else:
                values = knn_density(self.index, self.store, self.u_rows, k, progress=progress)
            density[self.store.positions(self.u_rows)] = values
            self._u_density[k] = density
        return self._u_density[k]


def index_over_u(
    items: str,
    embeddings: str,
    out_dir: str,
    factory: str = DEFAULT_FACTORY,
    *,
    id_column: str = "id",
    split_column: str | None = None,
    eval_split: str = "test",
    **options,
) -> tuple[dict, bool]:
    """Build (or reuse) the index over U: the items outside the evaluation split, so that no
    evaluation item is ever a neighbour, hence never selectable.

    Args:
        items: the item table (local or gs://).
        embeddings: the store directory.
        out_dir: the index directory.
        factory: faiss factory string.
        id_column: the external id column.
        split_column: the split column (None: every item is in U).
        eval_split: the evaluation split.
        **options: as for :func:`seals_al.index.build_index_dir` (``beam_args``: trained and
            filled on Beam workers, which read the store where it is published).

    Returns:
        (the manifest, whether an existing index was reused).
    """
    from seals_al.index.directory import ensure_index_dir

    config = _data(items, embeddings, id_column, split_column, eval_split, index_factory=factory)
    # An index build reads every row of U: here, or (with Beam options) in workers, by range.
    dataset = Dataset.prepare(config, access="mapped" if options.get("beam_args") is None else "rows")
    dataset.check_factory()
    if options.get("beam_args") is not None:
        from seals_al.index.build_pipeline import not_on_workers

        why = not_on_workers(dataset.store.dim, factory)
        if why:  # a Flat or HNSW index: nothing workers could share; built here, as without them
            print(f"{why}: built in this process", file=sys.stderr)
            options["beam_args"] = None
            dataset = Dataset.prepare(config, access="mapped")
    return ensure_index_dir(dataset.store, out_dir, factory, row_ids=dataset.u_rows, **options)


def graph_over_u(
    items: str,
    embeddings: str,
    index_uri: str,
    k: int,
    *,
    id_column: str = "id",
    split_column: str | None = None,
    eval_split: str = "test",
    beam_args: Sequence[str] = (),
) -> str:
    """The neighbour graph of U for k over the index :func:`index_over_u` built, its queries on
    Beam workers (:func:`seals_al.index.graph_pipeline.publish_graph`), put where a campaign's
    first round over that index finds it (so it builds none). Kept when it is there already.

    Returns:
        Where the graph is.
    """
    from seals_al.index.graph_pipeline import publish_graph

    config = _data(items, embeddings, id_column, split_column, eval_split, index=index_uri)
    dataset = Dataset.prepare(config, access="rows")
    return publish_graph(index_uri, dataset.store.uri, k, rows=dataset.u_rows, beam_args=beam_args)


def _data(
    items: str, embeddings: str, id_column: str, split_column: str | None, eval_split: str, **more
) -> DataConfig:
    """The data settings of a step over U that a pipeline runs before any campaign exists."""
    return DataConfig(
        data=items,
        id_column=id_column,
        split_column=split_column,
        eval_split=eval_split,
        embeddings=embeddings,
        **more,
    )
