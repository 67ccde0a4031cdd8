"""The faiss index: global ids survive shuffling and gaps, self is excluded, factory types answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from components import readme
from seals_al.errors import SealsError
from seals_al.index.build import build_index, search, search_key, set_search_parameters
from seals_al.index.directory import build_index_dir, open_index_dir
from seals_al.index.graph import RECORDS, NeighbourGraph, build_neighbour_graph, locality_order, write_records
from seals_al.index.neighbours import IndexNeighbours, knn_density, neighbour_density
from seals_al.settings import DEFAULT_NPROBE
from seals_al.store import EmbeddingStore
from seals_al.store_writer import write_store


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


def test_an_ivf_index_probes_the_default_lists_unless_told_otherwise(synthetic):
    """faiss probes 1 list by default, which misses true neighbours; an index built here probes
    DEFAULT_NPROBE, and the graph cache's key says so."""
    index = build_index(synthetic.store, synthetic.row_ids, "IVF64,Flat", train_size=1500, progress=False)
    assert faiss.extract_index_ivf(index).nprobe == DEFAULT_NPROBE
    queries = synthetic.row_ids[:50]

    def recall() -> float:
        _, I = search(index, synthetic.store.vectors(queries), 10, queries)
        exact = [set(synthetic.exact_knn(int(q), 10)) for q in queries]
        return float(np.mean([len(set(row.tolist()) & e) / 10 for row, e in zip(I, exact, strict=True)]))

    default = recall()
    set_search_parameters(index, nprobe=1)
    assert default >= 0.95 > recall(), "probing one list misses neighbours the default finds"
    assert search_key(16, "IVF64,Flat") == f"IVF64,Flat nprobe={DEFAULT_NPROBE}"
    assert search_key(16, "IVF8,Flat") == "IVF8,Flat nprobe=8", "never more lists than there are"
    assert search_key(16, "HNSW16") == "HNSW16"
    assert search_key(16, "Flat") == "Flat"


def test_the_build_index_components_nprobe_is_the_cores():
    assert readme.load("build_index").component_spec.inputs["nprobe"].default == DEFAULT_NPROBE


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


@pytest.mark.hostile
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
    np.testing.assert_array_equal(graph.ids(rows, 12), live_I)
    live = IndexNeighbours(synthetic.index).ids(rows, 12, lambda: synthetic.store.vectors(rows))
    np.testing.assert_array_equal(live, live_I)
    short_D, short_I = NeighbourGraph.open(tmp_path / "g").knn(rows[:3], 5)
    np.testing.assert_array_equal(short_I, live_I[:3, :5])
    np.testing.assert_allclose(short_D, live_D[:3, :5], rtol=1e-6)
    with pytest.raises(SealsError, match="holds 12 neighbours per row; 13 were asked for"):
        graph.knn(rows, 13)
    with pytest.raises(SealsError, match="row id 5 is not in the graph"):
        graph.knn(np.asarray([5]), 3)
    with pytest.raises(SealsError, match="not a neighbour graph"):
        NeighbourGraph.open(tmp_path)


@pytest.mark.parametrize("factory", ["IVF8,Flat", "Flat"])
def test_a_graphs_records_hold_each_rows_vector_density_and_list_near_its_neighbours(
    synthetic, tmp_path, factory
):
    """What a round on object storage reads: each row's record holds its vector, kNN density and
    list, and where each neighbour's record is, so an arrival's list comes with it; in an IVF
    index's list order (near rows near: the rows of one list are one run), else the graph's own."""
    index = build_index(synthetic.store, synthetic.row_ids, factory, train_size=1500, progress=False)
    build_neighbour_graph(index, synthetic.store, synthetic.row_ids, 10, tmp_path / "g", progress=False)
    rows = np.sort(synthetic.row_ids)
    order = locality_order(index, rows)
    if factory == "Flat":
        assert order is None
    else:
        assert sorted(order.tolist()) == list(range(len(rows))), "a permutation of the graph's rows"
        lists = faiss.extract_index_ivf(index).invlists
        runs = [np.searchsorted(rows, np.sort(faiss.rev_swig_ptr(lists.get_ids(n), lists.list_size(n))))
                for n in range(8) if lists.list_size(n)]  # fmt: skip
        placed = np.empty(len(rows), np.int64)
        placed[order] = np.arange(len(rows))
        for run in runs:  # each list's rows take consecutive records
            assert placed[run].max() - placed[run].min() == len(run) - 1
    write_records(tmp_path / "g", synthetic.store, order, chunk_rows=97, progress=False)
    graph = NeighbourGraph.open(tmp_path / "g", access="rows")
    assert graph.has_records
    local = NeighbourGraph.open(tmp_path / "g")  # mapped: no records
    asked = synthetic.row_ids[::11]
    vectors, density = graph.records_of(asked)
    np.testing.assert_array_equal(vectors, synthetic.store.vectors(asked))
    np.testing.assert_array_equal(density, neighbour_density(local.knn(asked, 10)[0]))
    np.testing.assert_array_equal(graph.ids(asked, 10), local.ids(asked, 10))
    # Their neighbours' records are found through the lists just read: no lookup is needed.
    neighbours = np.unique(local.ids(asked, 10))
    neighbours = neighbours[neighbours >= 0]
    assert all(int(r) in graph._positions for r in neighbours)
    vectors, _ = graph.records_of(neighbours)
    np.testing.assert_array_equal(vectors, synthetic.store.vectors(neighbours))
    records = np.load(tmp_path / "g" / RECORDS)
    assert sorted(records["row"].tolist()) == rows.tolist()


def test_neighbour_graph_over_dense_row_ids(tmp_path):
    """Row ids 0..n-1 take the no-search path; it must answer exactly like the searched one."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = write_store(
        tmp_path / "store", [f"x{i}" for i in range(300)], vectors, model="t", normalized=True
    )
    store = EmbeddingStore.open(store.path)
    assert list(store.row_ids) == list(range(300))
    index = build_index(store, store.row_ids, "Flat", progress=False)
    graph = build_neighbour_graph(index, store, store.row_ids, 6, tmp_path / "g", progress=False)
    rows = np.asarray([299, 0, 17, 17])
    D, I = graph.knn(rows, 6)
    live_D, live_I = IndexNeighbours(index).knn(rows, 6, lambda: store.vectors(rows))
    np.testing.assert_array_equal(I, live_I)
    np.testing.assert_allclose(D, live_D, rtol=1e-6)
    for bad in (300, -1):
        with pytest.raises(SealsError, match=f"row id {bad} is not in the graph"):
            graph.knn(np.asarray([3, bad]), 2)
    assert np.load(tmp_path / "g" / "neighbours.npy", mmap_mode="r").dtype == np.int32, "ids fit in int32"


def test_neighbour_graph_keeps_int64_ids_when_row_ids_need_them(tmp_path):
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    row_ids = np.arange(50, dtype=np.int64) * 2**28  # the largest is over 2**31
    store = write_store(
        tmp_path / "store", [f"x{i}" for i in range(50)], vectors, model="t", normalized=True, row_ids=row_ids
    )
    index = build_index(store, store.row_ids, "Flat", progress=False)
    graph = NeighbourGraph.open(
        build_neighbour_graph(index, store, store.row_ids, 5, tmp_path / "g", progress=False).path,
        in_memory=True,
    )
    assert np.load(tmp_path / "g" / "neighbours.npy", mmap_mode="r").dtype == np.int64
    D, I = graph.knn(row_ids[[49, 3]], 5)
    live_D, live_I = IndexNeighbours(index).knn(row_ids[[49, 3]], 5, lambda: store.vectors(row_ids[[49, 3]]))
    np.testing.assert_array_equal(I, live_I)
    np.testing.assert_allclose(D, live_D, rtol=1e-6)


LAYOUT_CASES = [
    ("Flat", "single", {}),
    ("Flat", "shards", {}),
    ("IVF16,Flat", "single", {"nprobe": 3}),
    ("IVF16,Flat", "ondisk", {"nprobe": 3}),
    ("IVF16,Flat", "shards", {"nprobe": 3}),
    ("IVF16,PQ4", "single", {"nprobe": 16}),
    ("HNSW16", "single", {"efSearch": 64}),
]


@pytest.mark.parametrize(("factory", "layout", "params"), LAYOUT_CASES)
def test_index_dirs_build_open_and_report_recall(synthetic, tmp_path, factory, layout, params):
    manifest = build_index_dir(
        synthetic.store,
        tmp_path / "ix",
        factory,
        layout=layout,
        shard_rows=400,
        train_size=1500,
        search_params=params,
        recall_queries=50,
        k=10,
        progress=False,
    )
    assert manifest["ntotal"] == len(synthetic.row_ids)
    assert manifest["search_params"] == params
    stored = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert stored["recall"] == manifest["recall"]
    index = open_index_dir(tmp_path / "ix", mmap=True)
    queries = synthetic.row_ids[:25]
    _, I = search(index, synthetic.store.vectors(queries), 10, queries)
    assert set(I.ravel().tolist()) <= set(synthetic.row_ids.tolist()), (
        "global ids, shuffled and gapped, survive"
    )
    # The recall in the manifest is what an independent exact search says about these queries.
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(synthetic.store.row_ids, size=50, replace=False))
    _, approx = search(index, synthetic.store.vectors(rows), 10, rows)
    hits = [
        len(set(a.tolist()) & set(synthetic.exact_knn(int(r), 10))) for r, a in zip(rows, approx, strict=True)
    ]
    assert manifest["recall"]["recall_at_k"] == pytest.approx(np.mean(hits) / 10)
    if factory == "Flat":
        assert manifest["recall"]["recall_at_k"] == 1.0


@pytest.mark.parametrize(
    ("factory", "layout"), [("Flat", "shards"), ("IVF16,Flat", "shards"), ("IVF16,Flat", "ondisk")]
)
def test_sharded_and_ondisk_answer_exactly_like_one_index(synthetic, tmp_path, factory, layout):
    params = {"nprobe": 3} if factory.startswith("IVF") else {}
    kwargs = {
        "shard_rows": 350,
        "train_size": 1500,
        "search_params": params,
        "recall_queries": 0,
        "progress": False,
    }
    build_index_dir(synthetic.store, tmp_path / "one", factory, layout="single", **kwargs)
    build_index_dir(synthetic.store, tmp_path / "many", factory, layout=layout, **kwargs)
    one, many = open_index_dir(tmp_path / "one"), open_index_dir(tmp_path / "many")
    queries = synthetic.row_ids[::11]
    D1, I1 = search(one, synthetic.store.vectors(queries), 12, queries)
    D2, I2 = search(many, synthetic.store.vectors(queries), 12, queries)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-6)


@pytest.mark.hostile
def test_index_dir_errors(synthetic, tmp_path):
    with pytest.raises(SealsError, match="the ondisk layout needs an IVF index; 'HNSW16' is not one"):
        build_index_dir(synthetic.store, tmp_path / "x", "HNSW16", layout="ondisk", progress=False)
    with pytest.raises(
        SealsError, match=r"cannot hold the fast-scan index 'IVF16,PQ4x4fs'.*single or shards"
    ):
        build_index_dir(synthetic.store, tmp_path / "x", "IVF16,PQ4x4fs", layout="ondisk", progress=False)
    with pytest.raises(SealsError, match="unknown index layout 'tiled'"):
        build_index_dir(synthetic.store, tmp_path / "x", "Flat", layout="tiled", progress=False)
    with pytest.raises(SealsError, match="not an index directory"):
        open_index_dir(tmp_path)
    assert not (tmp_path / "x").exists()


@pytest.mark.hostile
def test_an_index_is_never_published_over_a_folder_it_did_not_write(synthetic, tmp_path):
    """Publishing replaces the folder whole: a folder holding anything but an earlier index (the
    store itself, for one) is refused before training, and left as it was."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = {mine: "holds no manifest.json", synthetic.store.path: "holds a 'seals-embeddings/1' output"}
    for out, held in refused.items():
        before = sorted(p.name for p in Path(out).iterdir())
        message = f"{out}: exists, is not empty and {held}"
        with pytest.raises(SealsError, match=re.escape(message)):
            build_index_dir(synthetic.store, out, "Flat", progress=False)
        assert sorted(p.name for p in Path(out).iterdir()) == before
    for _ in range(2):  # the second time over an earlier index: replaced
        build_index_dir(synthetic.store, tmp_path / "ix", "Flat", progress=False, recall_queries=10)
    assert open_index_dir(tmp_path / "ix").ntotal == len(synthetic.store)


def test_build_index_command(synthetic, tmp_path, capsys):
    from seals_al.cli import main

    code = main(
        [
            "build-index",
            str(synthetic.store.path),
            str(tmp_path / "ix"),
            "--factory",
            "IVF16,Flat",
            "--nprobe",
            "16",
            "--train-size",
            "1500",
            "--recall-queries",
            "40",
            "--k",
            "5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "IVF16,Flat (single) over 1,500 vectors" in out
    assert "recall@5 1.0000 on 40 queries" in out
    assert main(["build-index", str(synthetic.store.path), str(tmp_path / "bad"), "--k", "0"]) == 2
