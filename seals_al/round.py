"""The round engine: train on the labeled set, evaluate, select the next batch.

One engine behind both drivers (docs/ARCHITECTURE.md): ``seals-al simulate`` runs every round in
one process with an oracle answering in memory; a campaign runs the same steps as stages that read
and write storage while people answer. Both hand the engine global row ids and labels in their
own order and get back the same objects:

- :meth:`RoundEngine.train` -> a :class:`~seals_al.train.LinearModel`;
- :meth:`RoundEngine.evaluate` -> an :class:`Evaluation` (AP on the evaluation split, recall);
- :meth:`RoundEngine.select` -> a :class:`SelectionOutcome` (the batch and what it cost) from
  :class:`Candidates`, which hold what is selectable across rounds: the SEALS candidate pool, or U
  minus the labeled set and the open batch in global mode;
- :meth:`RoundEngine.record` -> the :class:`~seals_al.record.RoundRecord` of the round.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from seals_al.dataset import Dataset
from seals_al.errors import PoolExhaustedError
from seals_al.pool import CandidatePool, MemberVectors
from seals_al.record import RoundRecord
from seals_al.selection import Selection, select_global, select_seals
from seals_al.settings import RoundConfig
from seals_al.storage.base import Storage
from seals_al.strategies import Strategy, get_strategy
from seals_al.train import LinearModel, average_precision, classification_curves, fit_logistic


@dataclass(frozen=True)
class Evaluation:
    """How a round's model does; the scores need ground truth (else None)."""

    labeled: int
    positives: int
    recall: float | None = None
    average_precision: float | None = None
    classification: dict | None = None  # ROC points and confusion matrix, when asked for
    positives_total: int | None = None


class Candidates(ABC):
    """What can still be selected. ``exclude`` takes rows out for good (labeled, or out for
    labeling); ``select`` picks a batch. The SEALS pool is saved with a round and restored by the
    next; global candidates are rebuilt from the rows taken."""

    restored = False  # True: rows taken before are excluded already (a restored pool)

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    def queries(self) -> int:
        """kNN look-ups made so far."""
        return 0

    @abstractmethod
    def exclude(self, row_ids: np.ndarray) -> None: ...

    @abstractmethod
    def remove(self, row_ids: np.ndarray) -> None:
        """Take rows out for good without treating them as taken (the tombstone list): they are
        never selected, and (SEALS) their neighbours do not join the pool through them."""

    @abstractmethod
    def select(
        self, model: LinearModel, strategy: Strategy, want: int, *, seed: int, r: int
    ) -> Selection: ...

    @abstractmethod
    def save(self, storage: Storage, prefix: str) -> None:
        """Keep what the next round restores."""

    @abstractmethod
    def vectors_of(self, row_ids: np.ndarray) -> np.ndarray:
        """The vectors of rows just selected (held in memory when the candidates have them)."""


class SealsCandidates(Candidates):
    """The candidate pool P: the neighbours of every labeled or selected example, minus those."""

    def __init__(
        self, pool: CandidatePool, cache: MemberVectors, restored: bool = False, marker: str | None = None
    ):
        self.pool = pool
        self.cache = cache
        self.restored = restored
        self.marker = marker  # saved with the pool: Dataset.pool_marker

    def __len__(self) -> int:
        return len(self.pool)

    @property
    def queries(self) -> int:
        return self.pool.queries

    def exclude(self, row_ids: np.ndarray) -> None:
        self.pool.expand(np.asarray(row_ids, dtype=np.int64).tolist())

    def remove(self, row_ids: np.ndarray) -> None:
        self.pool.remove(np.asarray(row_ids, dtype=np.int64).tolist())

    def select(self, model: LinearModel, strategy: Strategy, want: int, *, seed: int, r: int) -> Selection:
        return select_seals(self.pool, model, strategy, want, seed=seed, round_index=r)

    def save(self, storage: Storage, prefix: str) -> None:
        self.pool.save(storage, prefix, self.cache, self.marker)

    def vectors_of(self, row_ids: np.ndarray) -> np.ndarray:
        return self.pool.left_vectors(np.asarray(row_ids, np.int64).tolist())


class GlobalCandidates(Candidates):
    """The paper's baseline: every row of U not taken, scored in chunks from the store."""

    def __init__(self, dataset: Dataset, density: np.ndarray | None):
        self.dataset = dataset
        self.density = density
        store = dataset.store
        self.mask = np.zeros(len(store), dtype=bool)
        self.mask[store.positions(dataset.u_rows)] = True

    def __len__(self) -> int:
        return int(self.mask.sum())

    def exclude(self, row_ids: np.ndarray) -> None:
        if len(row_ids):
            self.mask[self.dataset.store.positions(np.asarray(row_ids, dtype=np.int64))] = False

    def remove(self, row_ids: np.ndarray) -> None:
        self.exclude(row_ids)  # global candidates are only ever taken out

    def select(self, model: LinearModel, strategy: Strategy, want: int, *, seed: int, r: int) -> Selection:
        selection = select_global(
            self.dataset.store,
            self.mask,
            model,
            strategy,
            want,
            seed=seed,
            round_index=r,
            density=self.density,
        )
        self.exclude(np.asarray([p.row_id for p in selection.picks], dtype=np.int64))
        return selection

    def save(self, storage: Storage, prefix: str) -> None:
        """Nothing to keep: global candidates follow from the rows taken."""

    def vectors_of(self, row_ids: np.ndarray) -> np.ndarray:
        return self.dataset.store.vectors(np.asarray(row_ids, np.int64))


@dataclass(frozen=True)
class SelectionOutcome:
    """A round's selection with its cost; ``seconds`` is None when nothing was asked for."""

    selection: Selection
    pool_size: int  # candidates when selection started
    seconds: float | None
    knn_queries: int
    stopped: str | None  # the pool was empty: why


class RoundEngine:
    """Train, evaluate and select for one concept over a prepared data set."""

    def __init__(self, dataset: Dataset, config: RoundConfig, concept: str, progress: bool = True):
        self.dataset = dataset
        self.config = config
        self.concept = concept
        self.strategy = get_strategy(config.strategy)
        self.progress = progress
        self._eval: tuple[np.ndarray, np.ndarray] | None = None

    # -- candidates ------------------------------------------------------------------------------
    def candidates(self) -> Candidates:
        """Fresh candidates: an empty pool (SEALS), or all of U (global)."""
        if self.config.mode == "seals":
            source = self.dataset.neighbours(self.config.k, self.progress)
            pool = CandidatePool(
                source, self.dataset.store, self.config.k, with_density=self.strategy.needs_density
            )
            return SealsCandidates(pool, self._member_vectors(), marker=self.dataset.pool_marker)
        density = (
            self.dataset.u_density(self.config.k, self.progress) if self.strategy.needs_density else None
        )
        return GlobalCandidates(self.dataset, density)

    def restore(self, storage: Storage, prefix: str, taken: set[str]) -> Candidates:
        """Candidates as a round saved them: the SEALS pool; global candidates are fresh.

        A pool that is not of this data is not restored: one saved before the data grew or other
        items were tombstoned (:attr:`~seals_al.dataset.Dataset.pool_marker`), or whose
        expanded rows are no longer examples in ``taken`` (every labeled and selected id: the data
        changed and its rows were numbered again). Fresh candidates are returned instead, which
        the caller expands with every labeled and selected example: the pool built from scratch
        over the data as it is (new items near labeled examples can be selected at once)."""
        if self.config.mode != "seals":
            return self.candidates()
        source = self.dataset.neighbours(self.config.k, self.progress)
        cache = self._member_vectors()
        marker = self.dataset.pool_marker
        pool = CandidatePool.load(storage, prefix, source, self.dataset.store, cache, marker)
        if pool is None:
            return self.candidates()
        expanded = np.fromiter(pool.expanded, dtype=np.int64, count=len(pool.expanded))
        if not set(self.dataset.external_ids(expanded)) <= taken:
            return self.candidates()
        return SealsCandidates(pool, cache, restored=True, marker=marker)

    def _member_vectors(self) -> MemberVectors:
        """Where this machine keeps saved pools' member vectors (the cache directory's pools/)."""
        return MemberVectors(self.dataset.cache_dir / "pools", self.dataset.store)

    # -- the steps of a round ----------------------------------------------------------------------
    def train(self, row_ids: np.ndarray, y: np.ndarray) -> LinearModel:
        """Fit the balanced logistic regression on the labeled rows (in the order given)."""
        x = self.dataset.store.vectors(np.asarray(row_ids, dtype=np.int64))
        return fit_logistic(x, np.asarray(y), C=self.config.C, seed=self.config.seed)

    def evaluate(self, model: LinearModel, y: np.ndarray, curves: bool = False) -> Evaluation:
        """Recall of U's positives and AP on the evaluation split, when ground truth is known;
        ``curves`` adds the ROC points and confusion matrix."""
        y = np.asarray(y)
        positives = int(y.sum())
        dataset = self.dataset
        if not dataset.has_truth:
            return Evaluation(len(y), positives)
        total = dataset.positives_in_u(self.concept)
        recall = float(positives / max(total, 1))
        ap = classification = None
        eval_x, eval_y = self._eval_split()
        if len(eval_y) and eval_y.any():
            scores = model.decision_function(eval_x)
            ap = average_precision(eval_y, scores)
            classification = classification_curves(eval_y, scores) if curves else None
        return Evaluation(len(y), positives, recall, ap, classification, total)

    def _eval_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The evaluation split's vectors and truth, read once."""
        if self._eval is None:
            dataset = self.dataset
            self._eval = dataset.eval_vectors(), dataset.eval_truth(self.concept)
        return self._eval

    def select(self, candidates: Candidates, model: LinearModel, want: int, r: int) -> SelectionOutcome:
        """Select up to ``want`` examples (none when ``want`` is 0); an empty pool is recorded as
        the reason to stop, not raised."""
        pool_size, queries = len(candidates), candidates.queries
        if want <= 0:
            return SelectionOutcome(Selection([], 0, exhausted=False), pool_size, None, 0, None)
        started = time.perf_counter()
        stopped = None
        try:
            selection = candidates.select(model, self.strategy, want, seed=self.config.seed, r=r)
        except PoolExhaustedError as e:
            selection, stopped = Selection([], 0, exhausted=True), str(e)
        seconds = time.perf_counter() - started
        return SelectionOutcome(selection, pool_size, seconds, candidates.queries - queries, stopped)

    def record(
        self, r: int, evaluation: Evaluation, outcome: SelectionOutcome, batch: int, queries_before: int = 0
    ) -> RoundRecord:
        """The round's record; ``queries_before`` counts the round's look-ups made before selection
        (expanding the newly labeled examples)."""
        n_u = self.dataset.u_count
        return RoundRecord(
            round=r,
            labeled=evaluation.labeled,
            positives=evaluation.positives,
            recall=evaluation.recall,
            average_precision=evaluation.average_precision,
            stopped=outcome.stopped,
            selection_seconds=outcome.seconds,
            scored=outcome.selection.scored,
            pool_size=outcome.pool_size,
            pool_fraction=outcome.pool_size / n_u,
            batch=batch,
            selected=len(outcome.selection.picks),
            knn_queries=queries_before + outcome.knn_queries,
            positives_total=evaluation.positives_total,
        )
