"""The candidate pool against a brute-force reference, over several rounds, with shuffled ids."""

from __future__ import annotations

import io

import numpy as np
import pytest

from seals_al.errors import PoolExhaustedError, SealsError
from seals_al.index.build import build_index, set_search_parameters
from seals_al.index.graph import build_neighbour_graph
from seals_al.index.neighbours import as_neighbours
from seals_al.pool import CandidatePool, MemberVectors, _Blocks
from seals_al.selection import select_seals
from seals_al.storage.local import LocalStorage
from seals_al.strategies import get_strategy, random_keys, tiebreak_keys
from seals_al.train import LinearModel, fit_logistic

K = 12
B = 15


def members(pool: CandidatePool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, vectors, density) of the pool's current members, from its slots."""
    ids, blocks, density, alive = pool.slots()
    live = np.flatnonzero(alive)
    vectors = np.concatenate(blocks)[live] if blocks else np.empty((0, pool.store.dim), np.float32)
    return ids[live], vectors, None if density is None else density[live]


def reference_pool(synthetic, expanded: list[int], k: int) -> set[int]:
    """P = union of exact kNN(x) for x in E, minus E."""
    pool: set[int] = set()
    for x in expanded:
        pool.update(synthetic.exact_knn(x, k))
    return pool - set(expanded)


def seed_rows(synthetic, n_pos: int = 3, n_neg: int = 20, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    positive = synthetic.row_ids[synthetic.cluster == 0]
    negative = synthetic.row_ids[synthetic.cluster != 0]
    return [
        int(r)
        for r in [*rng.choice(positive, n_pos, replace=False), *rng.choice(negative, n_neg, replace=False)]
    ]


def test_pool_matches_brute_force_over_rounds(synthetic):
    labeled = seed_rows(synthetic)
    pool = CandidatePool(synthetic.index, synthetic.store, K)
    pool.expand(labeled)
    assert set(members(pool)[0].tolist()) == reference_pool(synthetic, labeled, K)
    strategy = get_strategy("maxent")
    truth = {int(r): int(c == 0) for r, c in zip(synthetic.row_ids, synthetic.cluster, strict=True)}
    for r in range(4):
        model = fit_logistic(synthetic.store.vectors(np.asarray(labeled)), [truth[x] for x in labeled])
        selection = select_seals(pool, model, strategy, B, seed=7, round_index=r)
        picked = [p.row_id for p in selection.picks]
        assert len(picked) == B
        labeled += picked
        current = set(members(pool)[0].tolist())
        assert current == reference_pool(synthetic, labeled, K), f"round {r}"
        assert not current & set(labeled), "a labeled or selected example is in the pool"
        assert pool.expanded == set(labeled)


def _model(synthetic, labeled: list[int], kind: str) -> LinearModel:
    """A fitted model, or one built to tie: "flat" scores every example the same, and "coarse"
    saturates, so most members and arrivals share a score of exactly 0 or 1."""
    if kind == "flat":
        return LinearModel(np.zeros(synthetic.store.dim), 0.0)
    truth = {int(r): int(c == 0) for r, c in zip(synthetic.row_ids, synthetic.cluster, strict=True)}
    model = fit_logistic(synthetic.store.vectors(np.asarray(labeled)), [truth[x] for x in labeled])
    if kind == "coarse":
        return LinearModel(model.coef * 1e4, model.intercept * 1e4)
    return model


@pytest.mark.parametrize("kind", ["fitted", "flat", "coarse"])
def test_each_pick_is_the_argmax_of_the_pool_at_that_moment(synthetic, kind):
    """A naive greedy loop (rescore everything, exact kNN, full sort) picks the same sequence,
    including when most scores tie and the seeded key decides."""
    labeled = seed_rows(synthetic, seed=3)
    model = _model(synthetic, labeled, kind)
    for name in ("maxent", "mlp", "id", "random"):
        strategy = get_strategy(name)
        pool = CandidatePool(synthetic.index, synthetic.store, K, with_density=strategy.needs_density)
        pool.expand(labeled)
        got = select_seals(pool, model, strategy, B, seed=11, round_index=2)

        expanded = list(labeled)
        naive_pool = reference_pool(synthetic, expanded, K)
        expected = []
        key_scale: dict[int, float] = dict.fromkeys(naive_pool, 1.0)
        for _ in range(B):
            ids = np.asarray(sorted(naive_pool), dtype=np.int64)
            x = synthetic.store.vectors(ids)
            density = None
            if strategy.needs_density:
                density = np.asarray(
                    [
                        np.mean(x[i] @ synthetic.store.vectors(np.asarray(synthetic.exact_knn(int(r), K))).T)
                        for i, r in enumerate(ids)
                    ]
                )
            keys = random_keys(ids, 11, 2) * np.asarray([key_scale[int(r)] for r in ids])
            scores = strategy.scores(model.predict_proba(x), density, keys)
            best = int(np.lexsort((tiebreak_keys(ids, 11, 2), -scores))[0])
            choice = int(ids[best])
            last_key = float(scores[best])
            expected.append(choice)
            expanded.append(choice)
            new = reference_pool(synthetic, expanded, K)
            for r in new - naive_pool:
                key_scale[r] = last_key  # random: arrivals drawn below the last picked key
            naive_pool = new
        assert [p.row_id for p in got.picks] == expected, name
        sources = [p.reached_from for p in got.picks]
        assert all(s in set(expected) | set(labeled) for s in sources), name


def test_expand_is_incremental_and_idempotent(synthetic):
    labeled = seed_rows(synthetic)
    pool = CandidatePool(synthetic.index, synthetic.store, K)
    pool.expand(labeled)
    queries = pool.queries
    assert queries == len(labeled)
    arrivals = pool.expand(labeled)
    assert len(arrivals.ids) == 0
    assert pool.queries == queries, "re-expanding labeled examples must not query again"
    extra = int(members(pool)[0][0])
    pool.expand([extra])
    assert pool.queries == queries + 1
    assert extra not in pool


def test_save_and_load_resume_with_no_new_queries(synthetic, tmp_path):
    labeled = seed_rows(synthetic)
    pool = CandidatePool(synthetic.index, synthetic.store, K, with_density=True)
    pool.expand(labeled)
    pool.save(LocalStorage(tmp_path), "pool")
    loaded = CandidatePool.load(LocalStorage(tmp_path), "pool", synthetic.index, synthetic.store)
    ids, vectors, density = members(pool)
    ids2, vectors2, density2 = members(loaded)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(vectors, vectors2)
    np.testing.assert_array_equal(density, density2)
    assert loaded.expanded == pool.expanded
    queries = loaded.queries
    loaded.expand(labeled)
    assert loaded.queries == queries
    assert loaded.reached_from(int(ids[0])) == pool.reached_from(int(ids[0]))


def test_a_saved_pools_member_vectors_are_kept_for_the_next_load(synthetic, tmp_path):
    """With a MemberVectors cache, load reads the members' vectors from the file the save wrote
    for that exact pool.npz; without it (a new machine, a pruned or damaged file, another pool) it
    gathers them from the store, and both loads are the same pool."""
    storage, cache = LocalStorage(tmp_path / "c"), MemberVectors(tmp_path / "pools", synthetic.store)
    pool = CandidatePool(synthetic.index, synthetic.store, K)
    pool.expand(seed_rows(synthetic))
    pool.save(storage, "r0", cache)
    (kept,) = (tmp_path / "pools").glob("*.npy")
    ids, vectors, _ = members(pool)
    np.testing.assert_array_equal(np.load(kept), vectors)
    from_store = CandidatePool.load(storage, "r0", synthetic.index, synthetic.store)
    from_cache = CandidatePool.load(storage, "r0", synthetic.index, synthetic.store, cache)
    for loaded in (from_store, from_cache):
        np.testing.assert_array_equal(members(loaded)[0], ids)
        np.testing.assert_array_equal(members(loaded)[1], vectors)
    # The file is what load reads: changed in place, the change shows.
    marked = vectors.copy()
    marked[0] = 7.0
    np.save(kept, marked)
    np.testing.assert_array_equal(
        members(CandidatePool.load(storage, "r0", synthetic.index, synthetic.store, cache))[1][0], 7.0
    )
    # Cut short, or of another shape: a miss, and the store is read.
    for damage in (lambda: kept.write_bytes(kept.read_bytes()[:-5]), lambda: np.save(kept, vectors[:-1])):
        damage()
        again = CandidatePool.load(storage, "r0", synthetic.index, synthetic.store, cache)
        np.testing.assert_array_equal(members(again)[1], vectors)
    # Another pool has another file; only the newest KEEP files stay.
    for r in range(1, MemberVectors.KEEP + 2):
        pool.expand([int(ids[r])])
        pool.save(storage, f"r{r}", cache)
    assert len(list((tmp_path / "pools").glob("*.npy"))) == MemberVectors.KEEP
    newest = CandidatePool.load(
        storage, f"r{MemberVectors.KEEP + 1}", synthetic.index, synthetic.store, cache
    )
    np.testing.assert_array_equal(members(newest)[1], members(pool)[1])
    assert cache.read(storage.read_bytes(f"r{MemberVectors.KEEP + 1}/pool.npz"), len(pool)) is not None


def test_exhausted_pool_is_an_explicit_error(synthetic):
    pool = CandidatePool(synthetic.index, synthetic.store, 2)
    model = fit_logistic(synthetic.vectors[:40], (synthetic.cluster[:40] == synthetic.cluster[0]).astype(int))
    with pytest.raises(PoolExhaustedError, match="pool is empty"):
        select_seals(pool, model, get_strategy("maxent"), 5, seed=0, round_index=0)
    with pytest.raises(SealsError, match="k must be at least 1"):
        CandidatePool(synthetic.index, synthetic.store, 0)


def test_pool_running_out_mid_batch_returns_a_short_batch(synthetic):
    """With k=1 and one labeled example the pool holds one neighbour chain at a time."""
    pool = CandidatePool(synthetic.index, synthetic.store, 1)
    start = int(synthetic.row_ids[0])
    pool.expand([start])
    model = fit_logistic(synthetic.vectors[:40], (synthetic.cluster[:40] == synthetic.cluster[0]).astype(int))
    selection = select_seals(pool, model, get_strategy("mlp"), 10_000, seed=0, round_index=0)
    assert selection.exhausted
    assert 1 <= len(selection.picks) < len(synthetic.row_ids)
    assert len(pool) == 0


def test_block_storage_across_many_blocks_and_compaction(synthetic, monkeypatch):
    """Tiny blocks make every write, gather and compaction cross block boundaries."""
    monkeypatch.setattr(_Blocks, "ROWS", 7)
    labeled = seed_rows(synthetic)
    pool = CandidatePool(synthetic.index, synthetic.store, K)
    pool.expand(labeled)
    truth = {int(r): int(c == 0) for r, c in zip(synthetic.row_ids, synthetic.cluster, strict=True)}
    for r in range(3):
        model = fit_logistic(synthetic.store.vectors(np.asarray(labeled)), [truth[x] for x in labeled])
        labeled += [
            p.row_id
            for p in select_seals(pool, model, get_strategy("maxent"), 40, seed=1, round_index=r).picks
        ]
        ids, vectors, _ = members(pool)
        np.testing.assert_array_equal(vectors, synthetic.store.vectors(ids))
        assert set(ids.tolist()) == reference_pool(synthetic, labeled, K)
        pool._compact()  # what a save does: removed members' rows go, in place
        assert len(pool._vectors._blocks) == -(-len(pool) // 7)
        np.testing.assert_array_equal(members(pool)[1], vectors)


@pytest.mark.parametrize("name", ["maxent", "id"])
def test_graph_and_live_index_give_the_same_campaign(synthetic, tmp_path, name):
    graph = build_neighbour_graph(
        synthetic.index, synthetic.store, synthetic.row_ids, K, tmp_path / "g", progress=False
    )
    strategy = get_strategy(name)
    truth = {int(r): int(c == 0) for r, c in zip(synthetic.row_ids, synthetic.cluster, strict=True)}
    runs = []
    for source in (synthetic.index, graph):
        labeled = seed_rows(synthetic)
        pool = CandidatePool(source, synthetic.store, K, with_density=strategy.needs_density)
        pool.expand(labeled)
        picks = []
        for r in range(3):
            model = fit_logistic(synthetic.store.vectors(np.asarray(labeled)), [truth[x] for x in labeled])
            selection = select_seals(pool, model, strategy, B, seed=2, round_index=r)
            picks += [(p.row_id, p.reached_from, p.pool_size_before) for p in selection.picks]
            labeled += [p.row_id for p in selection.picks]
        runs.append((picks, pool.queries, set(members(pool)[0].tolist())))
    assert runs[0] == runs[1]


def test_load_detects_files_from_different_saves(synthetic, tmp_path):
    labeled = seed_rows(synthetic)
    pool = CandidatePool(synthetic.index, synthetic.store, K)
    storage = LocalStorage(tmp_path)
    pool.expand(labeled[:5])
    pool.save(storage, "a")
    pool.expand(labeled[5:])
    pool.save(storage, "b")
    (tmp_path / "b" / "pool.json").replace(tmp_path / "a" / "pool.json")  # a crash between the two writes
    with pytest.raises(SealsError, match=r"pool\.npz and pool\.json disagree"):
        CandidatePool.load(storage, "a", synthetic.index, synthetic.store)


def test_padded_and_overlapping_neighbour_lists(synthetic):
    """An IVF index probing one list of 64 (about 23 rows each) returns lists of 40 padded with -1,
    and the labeled rows' lists overlap: each member joins once, from the first list that reached
    it, and no -1 joins."""
    index = build_index(synthetic.store, synthetic.row_ids, "IVF64,Flat", train_size=1500, progress=False)
    set_search_parameters(index, nprobe=1)
    labeled = seed_rows(synthetic)
    I = as_neighbours(index).ids(
        np.asarray(labeled), 40, lambda: synthetic.store.vectors(np.asarray(labeled))
    )
    assert (I == -1).any(), "the test needs padded lists"
    expected: dict[int, int] = {}
    for source, row in zip(labeled, I.tolist(), strict=True):
        for n in row:
            if n >= 0 and n not in labeled:
                expected.setdefault(n, source)
    assert len(expected) < sum(len(set(row) - {-1}) for row in I.tolist()), "the test needs overlaps"
    pool = CandidatePool(index, synthetic.store, 40)
    arrivals = pool.expand(labeled)
    assert dict(zip(arrivals.ids.tolist(), arrivals.reached_from.tolist(), strict=True)) == expected
    assert list(arrivals.ids) == list(expected), "members are kept in the order they were reached"
    np.testing.assert_array_equal(arrivals.vectors, synthetic.store.vectors(arrivals.ids))
    assert len(pool) == len(expected)
    assert -1 not in pool
    assert all(pool.reached_from(r) == s for r, s in expected.items())


def test_a_saved_pool_is_the_same_bytes_whatever_python_writes_it():
    """pool.npz depends only on the arrays: the zip headers np.savez writes differ between Python
    releases (the image's 3.11.2 and a laptop's 3.11.7), which made the same round differ."""
    import hashlib

    from seals_al.arrays import npz_bytes

    data = npz_bytes({"a": np.arange(5, dtype=np.int64), "b": np.zeros(3, np.float32)})
    assert hashlib.sha256(data).hexdigest() == (
        "4263cbe71cca7a4986c7f1f1475bc788a542f54729e3528460508a669d8efeae"
    ), "the same bytes on 3.11.2 (checked in the image) and 3.11.7"
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        assert arrays["a"].tolist() == [0, 1, 2, 3, 4]
        assert arrays["b"].dtype == np.float32
