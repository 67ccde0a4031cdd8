"""Batch selection, in SEALS mode (over the candidate pool) and global mode (over U minus L).

SEALS (docs/ARCHITECTURE.md, "A round"): repeat b times: take x* = argmax over P of phi(x), move it into
the batch, add kNN(x*) to P. Existing members are scored once per round; members leave P only when
picked, so only the b best of them (and any tied with the b-th) are ever reached, and only those are
ordered. Members that arrive during the batch go into a small buffer; each pick compares the two
bests. Per round this costs |P| scores, a partition, b kNN look-ups and the arrivals' scores, with no
pass over U. Seeded tie-break keys are computed for the top b and, among arrivals, only when scores
tie, which a fitted model's continuous scores rarely do.

Global (the paper's baseline): the model is fixed within a round, so the greedy argmax b times is
the top b of U minus L, computed chunk by chunk from the memory-mapped store.

Both order candidates by (score descending, seeded tie-break key ascending), so with k >= |U|
the two modes select the same batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seals_al.errors import PoolExhaustedError, SealsError
from seals_al.pool import CandidatePool
from seals_al.store import EmbeddingStore
from seals_al.strategies import Strategy, random_keys, tiebreak_keys
from seals_al.train import LinearModel, sigmoid

_NO_KEYS = np.empty(0)
# Members are picked in score order (arrivals may come between them): their neighbour lists are
# read ahead this many at a time, in one batch (on object storage, one round trip for them all).
READ_AHEAD = 16


@dataclass(frozen=True)
class Pick:
    """One selected example, with why it was picked."""

    row_id: int
    score: float
    rank: int
    pool_size_before: int
    reached_from: int | None  # None in global mode


@dataclass(frozen=True)
class Selection:
    picks: list[Pick]
    scored: int  # examples scored this round
    exhausted: bool  # the pool ran out before b picks


def select_seals(
    pool: CandidatePool,
    model: LinearModel,
    strategy: Strategy,
    batch_size: int,
    *,
    seed: int,
    round_index: int,
) -> Selection:
    """Select a batch from the candidate pool, growing the pool with each pick's neighbours.

    One function on purpose: the per-pick loop is the hot path of a SEALS round (about 60 us a
    pick at 10M rows), kept on local variables with no calls it does not need.

    Raises:
        PoolExhaustedError: the pool is empty before the first pick.
    """
    if batch_size < 1:
        raise SealsError(f"batch size must be at least 1, got {batch_size}")
    if len(pool) == 0:
        raise PoolExhaustedError("the candidate pool is empty: every neighbour of the labeled set is labeled")
    ids, blocks, density, alive = pool.slots()
    live = np.flatnonzero(alive)
    ids = ids[live]  # a copy: the pool reuses its buffers as it grows
    proba = sigmoid(np.concatenate([model.decision_function(block) for block in blocks])[live])
    keys = random_keys(ids, seed, round_index) if strategy.is_random else _NO_KEYS
    scores = strategy.scores(proba, None if density is None else density[live], keys)
    scored = len(ids)
    # Members leave the pool only when picked, so at most b of them are ever reached: order the
    # top b (and everything tied with the b-th), not the whole pool.
    top = _top(scores, batch_size)
    ties = tiebreak_keys(ids[top], seed, round_index)
    at = np.lexsort((ties, -scores[top]))
    order_ids, order_scores, order_ties = ids[top][at].tolist(), scores[top][at].tolist(), ties[at].tolist()
    # Members arriving during the batch: at most k per pick and at most every row of the store,
    # so the buffer never grows. Their tie keys are computed only when a tie needs one.
    capacity = min(batch_size * pool.k, len(pool.store))
    new_scores = np.full(capacity, -np.inf)
    new_ids = np.zeros(capacity, dtype=np.int64)
    n_new = 0
    picks: list[Pick] = []
    cursor = 0
    while len(picks) < batch_size:
        best: tuple[float, float, int] | None = None
        if cursor < len(order_ids):
            best = (order_scores[cursor], order_ties[cursor], order_ids[cursor])
        arrival = _best_arrival(new_scores[:n_new], new_ids[:n_new], seed, round_index)
        if arrival is not None and (best is None or _beats(arrival, best, seed, round_index)):
            best = arrival
            new_scores[arrival[3]] = -np.inf
        elif best is not None:
            if cursor % READ_AHEAD == 0:  # members are picked in this order: read their lists ahead
                pool.prefetch(np.asarray(order_ids[cursor : cursor + READ_AHEAD], np.int64))
            cursor += 1
        if best is None:
            return Selection(picks, scored, exhausted=True)
        score, row_id = best[0], best[2]
        picks.append(Pick(row_id, score, len(picks), len(pool), pool.reached_from(row_id)))
        new = pool.expand([row_id])
        m = len(new.ids)
        if m:
            keys = _NO_KEYS
            if strategy.is_random:
                # Every member left has a key below the one just picked; drawing arrivals from
                # the same range keeps each pick uniform over the pool as it is at that moment.
                keys = random_keys(new.ids, seed, round_index) * score
            new_scores[n_new : n_new + m] = strategy.scores(
                model.predict_proba(new.vectors), new.density, keys
            )
            new_ids[n_new : n_new + m] = new.ids
            n_new += m
            scored += m
    return Selection(picks, scored, exhausted=False)


def _top(scores: np.ndarray, b: int) -> np.ndarray:
    """Positions of the b highest scores and of every score tied with the b-th (unordered)."""
    if len(scores) <= b:
        return np.arange(len(scores))
    cut = np.partition(scores, len(scores) - b)[len(scores) - b]
    return np.flatnonzero(scores >= cut)


def _best_arrival(
    scores: np.ndarray, ids: np.ndarray, seed: int, round_index: int
) -> tuple[float, float, int, int] | None:
    """(score, tie key, row id, slot) of the best arrival left, or None if none is left.

    The tie key is NaN unless several arrivals share the best score.
    """
    if len(scores) == 0:
        return None
    at = int(scores.argmax())  # array methods: np.argmax's dispatch costs more than a small argmax
    score = float(scores[at])
    if score == -np.inf:
        return None
    equal = (scores == score).nonzero()[0]
    if len(equal) == 1:
        return score, np.nan, int(ids[at]), at
    ties = tiebreak_keys(ids[equal], seed, round_index)
    at = int(equal[ties.argmin()])
    return score, float(ties.min()), int(ids[at]), at


def _beats(
    arrival: tuple[float, float, int, int], member: tuple[float, float, int], seed: int, r: int
) -> bool:
    """Whether an arrival goes before a member: higher score, or the lower tie key at equal scores."""
    if arrival[0] != member[0]:
        return arrival[0] > member[0]
    tie = arrival[1]
    if math.isnan(tie):
        tie = float(tiebreak_keys(np.asarray([arrival[2]]), seed, r)[0])
    return tie < member[1]


def select_global(
    store: EmbeddingStore,
    selectable: np.ndarray,
    model: LinearModel,
    strategy: Strategy,
    batch_size: int,
    *,
    seed: int,
    round_index: int,
    density: np.ndarray | None = None,
    chunk_rows: int = 65_536,
) -> Selection:
    """Select the top batch over every selectable row of the store, a chunk at a time.

    Args:
        store: the embeddings (memory-mapped; never copied whole).
        selectable: bool per storage position: in U and not labeled (or selected).
        model: the current classifier.
        strategy: the scoring function.
        batch_size: b.
        seed: tie-break and random seed.
        round_index: the round (keys differ per round).
        density: kNN density per storage position (information density only).
        chunk_rows: rows scored per block.

    Raises:
        PoolExhaustedError: nothing is selectable.
    """
    if batch_size < 1:
        raise SealsError(f"batch size must be at least 1, got {batch_size}")
    total = int(selectable.sum())
    if total == 0:
        raise PoolExhaustedError("nothing left to select: every example of U is labeled")
    if strategy.needs_density and density is None:
        raise SealsError("information density in global mode needs the kNN density of U")
    best_scores = np.empty(0)
    best_ties = np.empty(0)
    best_pos = np.empty(0, np.int64)
    for start, block in store.iter_chunks(chunk_rows):
        mask = selectable[start : start + len(block)]
        if not mask.any():
            continue
        positions = start + np.flatnonzero(mask)
        row_ids = store.row_ids[positions]
        proba = model.predict_proba(block)[mask]
        block_density = density[positions] if density is not None else None
        keys = random_keys(row_ids, seed, round_index) if strategy.is_random else np.empty(0)
        scores = strategy.scores(proba, block_density, keys)
        # Keep everything tied with the b-th best so the tie-break decides, not position.
        keep = _top(scores, batch_size)
        scores, positions, row_ids = scores[keep], positions[keep], row_ids[keep]
        ties = tiebreak_keys(row_ids, seed, round_index)
        all_scores = np.concatenate([best_scores, scores])
        all_ties = np.concatenate([best_ties, ties])
        all_pos = np.concatenate([best_pos, positions])
        top = np.lexsort((all_ties, -all_scores))[:batch_size]
        best_scores, best_ties, best_pos = all_scores[top], all_ties[top], all_pos[top]
    picks = [
        Pick(int(store.row_ids[p]), float(s), rank, total - rank, None)
        for rank, (p, s) in enumerate(zip(best_pos, best_scores, strict=True))
    ]
    return Selection(picks, total, exhausted=len(picks) < batch_size)
