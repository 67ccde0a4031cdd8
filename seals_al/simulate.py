"""Simulated campaigns: an oracle labeler reads the ground-truth label column.

The driver of benchmarks and the demo. One prepared :class:`Dataset` (items, embeddings, index)
serves any number of concepts, strategies and modes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from seals_al.embed import default_cache_dir, embed_texts, import_embeddings
from seals_al.embeddings import EmbeddingStore
from seals_al.errors import PoolExhaustedError, SealsError
from seals_al.index import (
    DEFAULT_FACTORY,
    NeighbourGraph,
    build_index,
    cached_neighbour_graph,
    check_factory,
    ensure_index_dir,
    knn_density,
    neighbour_density,
    open_index_dir,
    rows_digest,
)
from seals_al.items import has_column, read_items
from seals_al.pool import CandidatePool
from seals_al.selection import Selection, select_global, select_seals
from seals_al.storage import local_file, write_json_atomic, write_text_atomic
from seals_al.strategies import get_strategy
from seals_al.train import average_precision, fit_logistic

MODES = ("seals", "global")


@dataclass(frozen=True)
class DataConfig:
    """Where the items are and which columns mean what."""

    data: str
    text_column: str = "text"
    label_column: str | None = "label"  # ground truth (None: there is none)
    id_column: str = "id"
    split_column: str | None = "split"  # None: no evaluation split, every row is in U
    eval_split: str = "test"
    embeddings: str | None = None  # precomputed: a store dir, .npy or .parquet
    embeddings_column: str = "embedding"
    index_factory: str = DEFAULT_FACTORY
    index: str | None = None  # a built index directory (seals-al build-index) instead of the factory
    cache_dir: str | None = None
    knn_graph: bool = True  # precompute U's neighbour lists once instead of one query per pick


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated campaign (defaults follow the paper: 5 + 95 seeds, b = k = 100)."""

    concept: str
    strategy: str = "maxent"
    mode: str = "seals"
    seed_positives: int = 5
    seed_negatives: int = 95
    batch_size: int = 100
    rounds: int = 9
    k: int = 100
    seed: int = 0
    C: float = 1.0


@dataclass(frozen=True)
class Items:
    """The item table's columns that a simulation needs, validated before any embedding work."""

    source: str
    ids: list[str]
    texts: list[str] | None
    labels: np.ndarray | None  # ground-truth label per item (object array of str), if any
    is_eval: np.ndarray  # bool per item
    label_column: str | None
    eval_split: str

    @classmethod
    def load(cls, config: DataConfig) -> Items:
        columns = [c for c in (config.label_column, config.split_column) if c]
        path = local_file(config.data, config.cache_dir or default_cache_dir())
        # Texts are embedded unless embeddings are given; then they are read if present, for labelers.
        with_texts = config.embeddings is None or has_column(path, config.text_column)
        if with_texts:
            columns.append(config.text_column)
        table = read_items(path, columns, config.id_column)
        is_eval = np.zeros(len(table[config.id_column]), dtype=bool)
        if config.split_column:
            split = np.asarray(table[config.split_column], dtype=object)
            is_eval = split == config.eval_split
            if not is_eval.any():
                found = ", ".join(sorted(set(split.tolist()))[:10])
                raise SealsError(
                    f"{config.data}: no rows with {config.split_column}={config.eval_split!r} to evaluate on "
                    f"(found: {found})"
                )
            if is_eval.all():
                raise SealsError(
                    f"{config.data}: every row is in the evaluation split; nothing to select from"
                )
        texts = table[config.text_column] if with_texts else None
        labels = np.asarray(table[config.label_column], dtype=object) if config.label_column else None
        return cls(
            config.data,
            table[config.id_column],
            texts,
            labels,
            is_eval,
            config.label_column,
            config.eval_split,
        )

    def check(self, sim: SimulationConfig) -> None:
        """Fail early, before embedding, on an unknown concept, strategy or mode, or too few seeds."""
        get_strategy(sim.strategy)
        if sim.mode not in MODES:
            raise SealsError(f"unknown mode {sim.mode!r}; choose from {', '.join(MODES)}")
        if self.labels is None:
            raise SealsError(f"{self.source}: a simulation needs a label column for its oracle")
        positive = self.labels == sim.concept
        if not positive.any():
            known = sorted(set(self.labels.tolist()))
            shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
            raise SealsError(
                f"{self.source}: unknown concept {sim.concept!r} in column {self.label_column!r}; "
                f"known: {shown}"
            )
        n_pos = int((positive & ~self.is_eval).sum())
        n_neg = int((~positive & ~self.is_eval).sum())
        if n_pos < sim.seed_positives:
            raise SealsError(
                f"{self.source}: concept {sim.concept!r} has {n_pos} positives outside the "
                f"{self.eval_split!r} split; the seed set needs {sim.seed_positives}"
            )
        if n_neg < sim.seed_negatives:
            raise SealsError(
                f"{self.source}: only {n_neg} negatives; the seed set needs {sim.seed_negatives}"
            )
        if not (positive & self.is_eval).any():
            raise SealsError(
                f"{self.source}: concept {sim.concept!r} has no positives in the {self.eval_split!r} "
                "split, so average precision is undefined"
            )


@dataclass
class Dataset:
    """Items, their embeddings and the index over U (every row outside the evaluation split).

    The index is built on first use: with a cached neighbour graph a run never needs it.
    """

    config: DataConfig
    items: Items
    store: EmbeddingStore
    labels: np.ndarray | None  # ground-truth label per storage position, if any
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
            store = embed_texts(items.ids, items.texts, cache_dir=config.cache_dir, progress=progress)
        else:
            store = import_embeddings(
                config.embeddings, items.ids, cache_dir=config.cache_dir, column=config.embeddings_column
            )
        rows = store.row_ids_of(items.ids)
        labels = None
        if items.labels is not None:
            labels = np.empty(len(store), dtype=object)
            labels[store.positions(rows)] = items.labels
        check_factory(store.dim, config.index_factory)
        return cls(config, items, store, labels, rows[~items.is_eval], rows[items.is_eval], progress)

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
        if self.labels is None:
            raise SealsError(f"{self.config.data}: no ground-truth label column")
        return (self.labels[self.store.positions(rows)] == concept).astype(np.int8)

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
        label_column=None,
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


RoundCallback = Callable[[dict], None]


def simulate(
    dataset: Dataset,
    sim: SimulationConfig,
    out_dir: str | Path | None = None,
    on_round: RoundCallback | None = None,
    progress: bool = True,
) -> dict:
    """Run one campaign with an oracle labeler.

    Round r trains on the labeled set, evaluates, then (for r < rounds) selects a batch that
    the oracle labels. The record of the last round has no selection.

    Args:
        dataset: the prepared items, embeddings and index.
        sim: the campaign settings.
        out_dir: where summary.json, plot.png and rounds/NNN/selected.jsonl go (None: nowhere).
        on_round: called with each round's record as soon as it is known.
        progress: show progress bars for one-off work (kNN density of U).

    Returns:
        The summary: {"config": ..., "rounds": [...], "stopped": reason or None}.
    """
    dataset.items.check(sim)
    y_u = dataset.truth(sim.concept, dataset.u_rows)
    positives, negatives = dataset.u_rows[y_u == 1], dataset.u_rows[y_u == 0]
    strategy = get_strategy(sim.strategy)
    out = _prepare_out_dir(out_dir) if out_dir is not None else None
    store = dataset.store
    rng = np.random.default_rng(sim.seed)
    labeled = list(rng.choice(positives, sim.seed_positives, replace=False)) + list(
        rng.choice(negatives, sim.seed_negatives, replace=False)
    )
    labeled = [int(r) for r in labeled]
    y_labeled = dataset.truth(sim.concept, np.asarray(labeled)).tolist()
    eval_x = store.vectors(dataset.eval_rows)
    eval_y = dataset.truth(sim.concept, dataset.eval_rows)
    n_u = len(dataset.u_rows)
    positives_total = len(positives)

    pool = None
    selectable = None
    density = None
    if sim.mode == "seals":
        pool = CandidatePool(
            dataset.neighbours(sim.k, progress), store, sim.k, with_density=strategy.needs_density
        )
        pool.expand(labeled)
    else:
        selectable = np.zeros(len(store), dtype=bool)
        selectable[store.positions(dataset.u_rows)] = True
        selectable[store.positions(np.asarray(labeled))] = False
        if strategy.needs_density:
            density = dataset.u_density(sim.k, progress=progress)

    summary: dict = {"config": {**asdict(dataset.config), **asdict(sim)}, "rounds": [], "stopped": None}
    for r in range(sim.rounds + 1):
        x = store.vectors(np.asarray(labeled))
        model = fit_logistic(x, np.asarray(y_labeled), C=sim.C, seed=sim.seed)
        ap = average_precision(eval_y, model.decision_function(eval_x))
        found = int(sum(y_labeled))
        pool_size = len(pool) if pool is not None else int(selectable.sum())
        record = {
            "round": r,
            "labeled": len(labeled),
            "positives_found": found,
            "positives_total": positives_total,
            "recall": found / positives_total,
            "pool_size": pool_size,
            "pool_fraction": pool_size / n_u,
            "average_precision": ap,
            "selected": 0,
            "scored": 0,
            "knn_queries": pool.queries if pool is not None else 0,
            "selection_seconds": None,
        }
        if r < sim.rounds:
            started = time.perf_counter()
            try:
                if pool is not None:
                    selection = select_seals(
                        pool, model, strategy, sim.batch_size, seed=sim.seed, round_index=r
                    )
                else:
                    selection = select_global(
                        store,
                        selectable,
                        model,
                        strategy,
                        sim.batch_size,
                        seed=sim.seed,
                        round_index=r,
                        density=density,
                    )
            except PoolExhaustedError as e:
                summary["stopped"] = str(e)
                selection = Selection([], 0, exhausted=True)
            record["selection_seconds"] = time.perf_counter() - started
            picked = np.asarray([p.row_id for p in selection.picks], dtype=np.int64)
            answers = dataset.truth(sim.concept, picked).tolist() if len(picked) else []
            record.update(selected=len(picked), scored=selection.scored)
            if out is not None:
                _write_selected(out, r, selection, answers, sim.strategy, store)
            labeled.extend(picked.tolist())
            y_labeled.extend(answers)
            if selectable is not None and len(picked):
                selectable[store.positions(picked)] = False
            if selection.exhausted and summary["stopped"] is None:
                summary["stopped"] = (
                    f"round {r}: the pool ran out after {len(picked)} of {sim.batch_size} picks"
                )
        summary["rounds"].append(record)
        if out is not None:
            write_json_atomic(out / "summary.json", summary)
        if on_round is not None:
            on_round(record)
        if summary["stopped"] is not None and record["selected"] == 0:
            break
    if out is not None:
        from seals_al.report import plot_runs

        plot_runs([summary], out / "plot.png")
    return summary


def full_supervision_ap(dataset: Dataset, concept: str, C: float = 1.0, seed: int = 0) -> float:
    """AP of the same classifier trained on every label of U: the reference line."""
    model = fit_logistic(
        dataset.store.vectors(dataset.u_rows), dataset.truth(concept, dataset.u_rows), C=C, seed=seed
    )
    return average_precision(
        dataset.truth(concept, dataset.eval_rows),
        model.decision_function(dataset.store.vectors(dataset.eval_rows)),
    )


def check_out_dir(out_dir: str | Path) -> None:
    """An output directory is new, empty, or an earlier simulation's (which is replaced)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "summary.json").exists())):
        raise SealsError(f"{out}: exists, is not empty and holds no earlier simulation; choose another --out")


def _prepare_out_dir(out_dir: str | Path) -> Path:
    check_out_dir(out_dir)
    out = Path(out_dir)
    if (out / "rounds").exists():
        shutil.rmtree(out / "rounds")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_selected(
    out: Path, r: int, selection: Selection, answers: list[int], strategy: str, store: EmbeddingStore
) -> None:
    rows = np.asarray([p.row_id for p in selection.picks], dtype=np.int64)
    sources = [p.reached_from for p in selection.picks]
    known_sources = np.asarray([s for s in sources if s is not None], dtype=np.int64)
    source_ids = iter(store.external_ids(known_sources)) if len(known_sources) else iter(())
    lines = []
    for pick, item_id, answer, source in zip(
        selection.picks, store.external_ids(rows) if len(rows) else [], answers, sources, strict=True
    ):
        lines.append(
            json.dumps(
                {
                    "id": item_id,
                    "round": r,
                    "rank": pick.rank,
                    "score": pick.score,
                    "strategy": strategy,
                    "pool_size_before": pick.pool_size_before,
                    "reached_from": next(source_ids) if source is not None else None,
                    "label": answer,
                }
            )
        )
    write_text_atomic(out / "rounds" / f"{r:03d}" / "selected.jsonl", "".join(line + "\n" for line in lines))
