"""A data set prepared for rounds: the items, their embeddings store, the index over U and the
neighbour lists the pool reads. Prepared once; any number of rounds, concepts and campaigns share
it (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from seals_al.embed.local import embed_texts, import_embeddings
from seals_al.encoder import TEXT_MODEL_DIM
from seals_al.errors import SealsError
from seals_al.index.build import build_index, check_factory
from seals_al.index.directory import ensure_index_dir, open_index_dir
from seals_al.index.neighbours import NeighbourGraph, cached_neighbour_graph, knn_density, neighbour_density
from seals_al.items import Items
from seals_al.settings import DEFAULT_FACTORY, DataConfig
from seals_al.storage import default_cache_dir
from seals_al.store import EmbeddingStore, rows_digest


@dataclass
class Dataset:
    """Items, their embeddings and the index over U (every row outside the evaluation split).

    The index is built on first use: with a cached neighbour graph a run never needs it.
    """

    config: DataConfig
    items: Items
    store: EmbeddingStore
    truth_at: np.ndarray | None  # the truth column's value per storage position, if any
    u_rows: np.ndarray  # global row ids of U
    eval_rows: np.ndarray  # global row ids of the evaluation split (never selectable)
    progress: bool = True
    _index: faiss.Index | None = None
    _graphs: dict[int, NeighbourGraph] = field(default_factory=dict)
    _u_density: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def prepare(cls, config: DataConfig, items: Items | None = None, progress: bool = True) -> Dataset:
        """Embed the items (or import their embeddings; both cached); check the index factory."""
        items = items or Items.load(config)
        if config.embeddings is None:
            check_factory(TEXT_MODEL_DIM, config.index_factory)  # a bad string fails before the embedding
            store = embed_texts(items.ids, items.texts, cache_dir=config.cache_dir, progress=progress)
        else:
            store = import_embeddings(
                config.embeddings, items.ids, cache_dir=config.cache_dir, column=config.embeddings_column
            )
        rows = store.row_ids_of(items.ids)
        truth_at = None
        if items.truth is not None:
            truth_at = np.empty(len(store), dtype=object)
            truth_at[store.positions(rows)] = items.truth
        check_factory(store.dim, config.index_factory)
        return cls(config, items, store, truth_at, rows[~items.is_eval], rows[items.is_eval], progress)

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            if self.config.index:
                self._index = open_index_dir(self.config.index)
                if self._index.d != self.store.dim:
                    raise SealsError(
                        f"{self.config.index}: index of dimension {self._index.d}, embeddings of "
                        f"dimension {self.store.dim}"
                    )
            else:
                self._index = build_index(
                    self.store, self.u_rows, self.config.index_factory, progress=self.progress
                )
        return self._index

    def _index_key(self) -> str:
        """What the cached graph depends on besides the rows: the factory, or the built index."""
        if not self.config.index:
            return self.config.index_factory
        manifest = Path(self.config.index) / "manifest.json"
        if not manifest.is_file():
            raise SealsError(f"{self.config.index}: not an index directory (no manifest.json)")
        source = json.loads(manifest.read_text()).get("source", {})
        if source.get("rows_sha256") != rows_digest(self.u_rows):
            raise SealsError(
                f"{self.config.index}: the index was not built over U ({len(self.u_rows):,} rows outside "
                f"the {self.config.eval_split!r} split); build it over those rows"
            )
        return "index " + hashlib.sha256(manifest.read_bytes()).hexdigest()

    def truth(self, concept: str, rows: np.ndarray) -> np.ndarray:
        """1 where the label column equals the concept, else 0."""
        if self.truth_at is None:
            raise SealsError(f"{self.config.data}: no ground-truth column")
        return (self.truth_at[self.store.positions(rows)] == concept).astype(np.int8)

    def neighbours(self, k: int, progress: bool = True) -> faiss.Index | NeighbourGraph:
        """Where the pool gets neighbour lists: the graph of U for this k (built once, cached in
        the cache directory), or the index itself when the graph is turned off."""
        if not self.config.knn_graph:
            return self.index
        if k not in self._graphs:
            self._graphs[k] = cached_neighbour_graph(
                lambda: self.index,
                self.store,
                self.u_rows,
                self._index_key(),
                k,
                Path(self.config.cache_dir or default_cache_dir()),
                progress=progress,
            )
        return self._graphs[k]

    def u_density(self, k: int, progress: bool = True) -> np.ndarray:
        """kNN density of every row of U (per storage position; computed once per k)."""
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
        **options: as for :func:`seals_al.index.build_index_dir`.

    Returns:
        (the manifest, whether an existing index was reused).
    """
    config = DataConfig(
        data=items,
        id_column=id_column,
        split_column=split_column,
        eval_split=eval_split,
        embeddings=embeddings,
        index_factory=factory,
    )
    loaded = Items.load(config)
    store = import_embeddings(embeddings, loaded.ids)
    check_factory(store.dim, factory)
    rows = store.row_ids_of(loaded.ids)[~loaded.is_eval]
    return ensure_index_dir(store, out_dir, factory, row_ids=rows, **options)
