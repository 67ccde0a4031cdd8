"""The faiss index: global ids survive shuffling and gaps, self is excluded, factory types answer."""

from __future__ import annotations

import numpy as np
import pytest

from seals_al.embeddings import write_store
from seals_al.errors import SealsError
from seals_al.index import (
    IndexNeighbours,
    NeighbourGraph,
    build_index,
    build_neighbour_graph,
    knn_density,
    neighbour_density,
    search,
    set_search_parameters,
)


def test_exact_search_returns_global_ids_without_the_query(synthetic):
    queries = synthetic.row_ids[[5, 17, 400, 1499]]
    D, I = search(synthetic.index, synthetic.store.vectors(queries), 10, queries)
    for q, row, sims in zip(queries, I, D, strict=True):
        assert int(q) not in row.tolist()
        assert row.tolist() == synthetic.exact_knn(int(q), 10)
        assert np.all(np.diff(sims) <= 1e-6), "best first"
    single_D, single_I = search(synthetic.index, synthetic.store.vectors(queries[:1]), 10, queries[:1])
    np.testing.assert_array_equal(single_I[0], I[0])
    np.testing.assert_allclose(single_D[0], D[0], rtol=1e-6)


def test_self_is_dropped_even_when_a_duplicate_ties_with_it(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate: the search may rank either first
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    row_ids = np.arange(50, dtype=np.int64)[::-1] * 10 + 3
    store = write_store(
        tmp_path / "s", [str(r) for r in row_ids], x, model="t", normalized=True, row_ids=row_ids
    )
    index = build_index(store, row_ids, progress=False)
    for q in (row_ids[3], row_ids[7]):
        _, I = search(index, store.vectors(np.asarray([q])), 5, np.asarray([q]))
        assert q not in I[0].tolist()
        twin = row_ids[7] if q == row_ids[3] else row_ids[3]
        assert I[0][0] == twin


def test_short_neighbour_lists_are_padded(tmp_path):
    x = np.eye(4, dtype=np.float32)
    store = write_store(tmp_path / "s", list("abcd"), x, model="t", normalized=True)
    index = build_index(store, store.row_ids, progress=False)
    D, I = search(index, x[:1], 5, np.asarray([0]))
    assert set(I[0].tolist()[:3]) == {1, 2, 3}
    assert I[0].tolist()[3:] == [-1, -1]
    assert np.isneginf(D[0][3:]).all()
    assert neighbour_density(D)[0] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("factory", "params"),
    [
        ("Flat", {}),
        ("IVF16,Flat", {"nprobe": 16}),
        ("IVF16,PQ4", {"nprobe": 16}),
        ("HNSW16", {"efSearch": 64}),
    ],
)
def test_factory_types_build_and_answer_with_global_ids(synthetic, factory, params):
    index = build_index(synthetic.store, synthetic.row_ids, factory, train_size=1500, progress=False)
    set_search_parameters(index, **params)
    assert index.ntotal == len(synthetic.row_ids)
    queries = synthetic.row_ids[:20]
    _, I = search(index, synthetic.store.vectors(queries), 10, queries)
    assert set(I.ravel().tolist()) <= set(synthetic.row_ids.tolist())
    hits = np.mean(
        [
            len(set(row.tolist()) & set(synthetic.exact_knn(int(q), 10))) / 10
            for q, row in zip(queries, I, strict=True)
        ]
    )
    assert hits >= (0.99 if factory != "IVF16,PQ4" else 0.3), f"recall@10 {hits:.2f}"


def test_index_over_a_subset_only_returns_that_subset(synthetic):
    subset = synthetic.row_ids[::3]
    index = build_index(synthetic.store, subset, progress=False)
    outside = synthetic.row_ids[1:2]
    _, I = search(index, synthetic.store.vectors(outside), 25, outside)
    assert set(I[0].tolist()) <= set(subset.tolist())


def test_density_is_the_mean_similarity_to_the_neighbours(synthetic):
    rows = synthetic.row_ids[:30]
    density = knn_density(synthetic.index, synthetic.store, rows, 8, chunk_rows=7, progress=False)
    for r, d in zip(rows, density, strict=True):
        neighbours = synthetic.store.vectors(np.asarray(synthetic.exact_knn(int(r), 8)))
        assert d == pytest.approx(
            float(np.mean(neighbours @ synthetic.store.vectors(np.asarray([r]))[0])), abs=1e-5
        )


def test_bad_factory_and_wrong_dimension(synthetic):
    with pytest.raises(SealsError, match="invalid faiss factory string 'IVFoops'"):
        build_index(synthetic.store, synthetic.row_ids, "IVFoops", progress=False)
    with pytest.raises(SealsError, match="expects dimension 16"):
        search(synthetic.index, np.zeros((1, 15), np.float32), 3)
    with pytest.raises(SealsError, match="unknown row id 42"):
        synthetic.store.vectors(np.asarray([42]))


def test_neighbour_graph_equals_live_search(synthetic, tmp_path):
    graph = build_neighbour_graph(
        synthetic.index, synthetic.store, synthetic.row_ids, 12, tmp_path / "g", chunk_rows=97, progress=False
    )
    assert len(graph) == len(synthetic.row_ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g", "store"], "no temporary directory left behind"
    rows = synthetic.row_ids[::7]
    D, I = graph.knn(rows, 12)
    live_D, live_I = IndexNeighbours(synthetic.index).knn(rows, 12, lambda: synthetic.store.vectors(rows))
    np.testing.assert_array_equal(I, live_I)
    np.testing.assert_allclose(D, live_D, rtol=1e-6)
    short_D, short_I = NeighbourGraph.open(tmp_path / "g").knn(rows[:3], 5)
    np.testing.assert_array_equal(short_I, live_I[:3, :5])
    np.testing.assert_allclose(short_D, live_D[:3, :5], rtol=1e-6)
    with pytest.raises(SealsError, match="holds 12 neighbours per row; 13 were asked for"):
        graph.knn(rows, 13)
    with pytest.raises(SealsError, match="row id 5 is not in the graph"):
        graph.knn(np.asarray([5]), 3)
    with pytest.raises(SealsError, match="not a neighbour graph"):
        NeighbourGraph.open(tmp_path)
