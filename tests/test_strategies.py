"""Strategy scores on hand-made probabilities; seeded tie-breaking; global vs seals agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seals_al.errors import SealsError
from seals_al.index.neighbours import knn_density
from seals_al.pool import CandidatePool
from seals_al.selection import select_global, select_seals
from seals_al.strategies import binary_entropy, get_strategy, hash_keys, random_keys, tiebreak_keys
from seals_al.train import LinearModel, fit_logistic

P = np.array([0.01, 0.5, 0.9, 0.3, 0.7])
NO_KEYS = np.zeros(len(P))


def test_maxent_ranks_by_closeness_to_one_half():
    scores = get_strategy("maxent").scores(P, None, NO_KEYS)
    assert scores[1] == pytest.approx(math.log(2))
    assert scores[3] == pytest.approx(scores[4])  # 0.3 and 0.7 are equally uncertain
    ranking = list(np.argsort(-scores))
    assert ranking[0] == 1
    assert set(ranking[1:3]) == {3, 4}
    assert ranking[3:] == [2, 0]
    assert binary_entropy(np.array([0.0, 1.0])) == pytest.approx([0.0, 0.0], abs=1e-9)


def test_mlp_ranks_by_positive_probability():
    scores = get_strategy("mlp").scores(P, None, NO_KEYS)
    assert list(np.argsort(-scores)) == [2, 4, 1, 3, 0]


def test_information_density_weights_entropy_by_density():
    density = np.array([0.9, 0.1, 0.5, 0.8, 0.2])
    scores = get_strategy("id").scores(P, density, NO_KEYS)
    np.testing.assert_allclose(scores, binary_entropy(P) * density)
    # 0.3 and 0.7 tie on entropy; density decides.
    assert scores[3] > scores[4]
    assert next(iter(np.argsort(-scores))) == 3
    with pytest.raises(SealsError, match="density"):
        get_strategy("id").scores(P, None, NO_KEYS)


def test_random_scores_are_the_seeded_keys():
    ids = np.arange(1000, 1005)
    keys = random_keys(ids, seed=3, round_index=1)
    np.testing.assert_array_equal(get_strategy("random").scores(P, None, keys), keys)
    assert not np.array_equal(keys, random_keys(ids, seed=4, round_index=1))
    assert not np.array_equal(keys, random_keys(ids, seed=3, round_index=2))


def test_keys_are_uniform_and_independent_of_order():
    ids = np.arange(200_000, dtype=np.int64) * 7 + 3
    keys = hash_keys(ids, seed=0, round_index=0)
    assert keys.min() >= 0
    assert keys.max() < 1
    assert abs(keys.mean() - 0.5) < 0.005
    assert np.histogram(keys, bins=10, range=(0, 1))[0].min() > 19_000
    perm = np.random.default_rng(1).permutation(len(ids))
    np.testing.assert_array_equal(hash_keys(ids[perm], 0, 0), keys[perm])
    assert not np.array_equal(tiebreak_keys(ids, 0, 0), random_keys(ids, 0, 0))


def test_unknown_strategy():
    with pytest.raises(SealsError, match="unknown strategy 'entropy'"):
        get_strategy("entropy")


def test_ties_break_by_seeded_key_not_position(synthetic):
    """A model that gives every example the same score: the pick follows the tie-break keys."""
    flat = LinearModel(np.zeros(synthetic.store.dim), 0.0)
    selectable = np.ones(len(synthetic.store), dtype=bool)
    strategy = get_strategy("maxent")
    picks = [
        p.row_id
        for p in select_global(
            synthetic.store, selectable, flat, strategy, 10, seed=5, round_index=0, chunk_rows=128
        ).picks
    ]
    keys = tiebreak_keys(synthetic.store.row_ids, 5, 0)
    assert picks == synthetic.store.row_ids[np.argsort(keys)[:10]].tolist()
    other = [
        p.row_id
        for p in select_global(
            synthetic.store, selectable, flat, strategy, 10, seed=6, round_index=0, chunk_rows=128
        ).picks
    ]
    assert other != picks


@pytest.mark.parametrize("name", ["maxent", "id", "mlp", "random"])
def test_global_and_seals_agree_when_k_covers_u(synthetic, name):
    strategy = get_strategy(name)
    store, n = synthetic.store, len(synthetic.row_ids)
    labeled = np.random.default_rng(0).choice(synthetic.row_ids, 60, replace=False)
    y = (synthetic.cluster[store.positions(labeled)] == 0).astype(int)
    model = fit_logistic(store.vectors(labeled), y)

    pool = CandidatePool(synthetic.index, store, n, with_density=strategy.needs_density)
    pool.expand(labeled)
    assert len(pool) == n - len(labeled)
    seals = select_seals(pool, model, strategy, 25, seed=9, round_index=4)

    selectable = np.ones(n, dtype=bool)
    selectable[store.positions(labeled)] = False
    density = None
    if strategy.needs_density:
        density = np.empty(n, dtype=np.float32)
        density[store.positions(synthetic.row_ids)] = knn_density(
            synthetic.index, store, synthetic.row_ids, n, progress=False
        )
    glob = select_global(
        store, selectable, model, strategy, 25, seed=9, round_index=4, density=density, chunk_rows=300
    )
    assert [p.row_id for p in seals.picks] == [p.row_id for p in glob.picks]
    np.testing.assert_allclose([p.score for p in seals.picks], [p.score for p in glob.picks], rtol=1e-5)
