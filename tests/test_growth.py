"""Data that grows: a campaign's items as a folder to which files are added. Only the new items are
embedded (the real model), appended to the previous version's store, whose shards and row ids stay;
a changed text, a removed file and a crash mid-append each end as documented."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seals_al.embed.local import embed_texts
from seals_al.errors import SealsError
from seals_al.preparing import prepare
from seals_al.settings import DataConfig

from .conftest import CLINC


def clinc_rows(n: int, skip: int = 0) -> list[dict]:
    with CLINC.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[skip : skip + n]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def grown(tmp_path):
    """A folder of items prepared once (40 rows), then again after a second file (12 rows)."""
    folder = tmp_path / "items"
    folder.mkdir()
    write_csv(folder / "2026-11-30.csv", clinc_rows(40))
    config = DataConfig(data=str(folder), cache_dir=str(tmp_path / "cache"))
    before = prepare(config, progress=False)
    write_csv(folder / "2026-12-01.csv", clinc_rows(12, skip=40))
    return config, before


def test_only_new_items_are_embedded_and_appended_after_the_old_rows(grown, tmp_path):
    config, before = grown
    after = prepare(config, progress=False)
    old, new = before.store, after.store
    assert new.path != old.path, "a new store: the old version stays as it was"
    assert (len(old), len(new)) == (40, 52)
    assert new.manifest["extra"] == {"appended_to": old.digest(), "appended": 12, "base_count": 40}
    assert new.manifest["row_ids"] == "positions", "old rows keep their row ids, new ones follow"
    for shard in old.manifest["shards"]:  # hard-linked, not copied, not rewritten
        assert os.stat(new.path / shard["path"]).st_ino == os.stat(old.path / shard["path"]).st_ino
    old_ids = before.ids_at(np.arange(40))
    np.testing.assert_array_equal(after.row_ids_at(after.items_of(old_ids)), before.row_ids_at(np.arange(40)))
    new_ids = [r["id"] for r in clinc_rows(12, skip=40)]
    assert sorted(after.row_ids_at(after.items_of(new_ids)).tolist()) == list(range(40, 52))
    # The appended vectors are the model's own, as a whole embedding of all 52 items gives them.
    rows = clinc_rows(52)
    whole = embed_texts(
        [r["id"] for r in rows], [r["text"] for r in rows], cache_dir=tmp_path / "other", progress=False
    )
    ids = [r["id"] for r in rows]
    np.testing.assert_allclose(
        new.vectors(new.row_ids_of(ids)), whole.vectors(whole.row_ids_of(ids)), atol=1e-5
    )
    assert prepare(config, progress=False).key == after.key, "prepared once per version"


def test_what_changed_since_a_version_is_counted_by_id_or_else_from_the_append(grown):
    import shutil

    config, before = grown
    after = prepare(config, progress=False)
    assert after.changes_since(after.key, after.store.digest()) == (0, 0)
    assert after.changes_since(before.key, before.store.digest()) == (12, 0), "counted by id"
    shutil.rmtree(before.folder.local)  # prepared on another machine, or pruned: the store's own record
    assert after.changes_since(before.key, before.store.digest()) == (12, 0)
    assert after.changes_since(before.key, "another store") is None, "not known here"


def test_a_store_of_another_model_is_not_appended_to_but_embedded_whole(grown, monkeypatch):
    """The model changed since the last version was embedded (a new package): one store holds one
    model's vectors, so the new version is embedded whole."""
    config, _ = grown
    monkeypatch.setattr("seals_al.encoder.TEXT_MODEL", "another/model")
    after = prepare(config, progress=False)
    assert len(after.store) == 52
    assert "appended_to" not in after.store.manifest.get("extra", {})


@pytest.mark.parametrize("another_removed", [False, True])
def test_a_changed_text_is_an_error_naming_the_id_and_nothing_is_written(grown, tmp_path, another_removed):
    """Also when another item left in the same version (the new version would be embedded whole,
    and the changed text was taken silently)."""
    config, _ = grown
    first = Path(config.data) / "2026-11-30.csv"
    rows = clinc_rows(40)
    rows[3] = {**rows[3], "text": "a text changed after it was embedded"}
    write_csv(first, [r for i, r in enumerate(rows) if not (another_removed and i == 7)])
    stores = sorted((tmp_path / "cache" / "embeddings").iterdir())
    with pytest.raises(
        SealsError, match=rf"the text of id '{rows[3]['id']}' changed since it was embedded"
    ) as e:
        prepare(config, progress=False)
    assert sorted((tmp_path / "cache" / "embeddings").iterdir()) == stores, "no store written"
    lineage = Path(str(e.value).rsplit("or remove ", 1)[1].split(" to embed")[0])
    lineage.unlink()  # the way out the message names: the new data embedded whole
    whole = prepare(config, progress=False).store
    assert len(whole) == 52 - another_removed
    assert "appended_to" not in whole.manifest.get("extra", {})


def test_items_that_leave_mean_the_version_is_embedded_whole(grown):
    config, _ = grown
    (Path(config.data) / "2026-11-30.csv").unlink()
    after = prepare(config, progress=False)
    assert len(after.store) == 12
    assert "extra" not in after.store.manifest, "not an append: embedded whole"


def test_a_crash_mid_append_leaves_the_previous_version_and_the_next_run_completes_it(grown, tmp_path):
    config, before = grown
    code = (
        "from seals_al.preparing import prepare\n"
        "from seals_al.settings import DataConfig\n"
        f"prepare(DataConfig(data={config.data!r}, cache_dir={config.cache_dir!r}), progress=False)\n"
    )
    env = {**os.environ, "SEALS_FAILPOINT": "during_append"}
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    stores = [p for p in (tmp_path / "cache" / "embeddings").iterdir() if not p.name.startswith(".")]
    assert [p.name for p in stores] == [before.store.path.name], "only the previous store is published"
    assert before.store.digest() == type(before).open(before.folder.local).store.digest(), "intact"
    after = prepare(config, progress=False)
    assert len(after.store) == 52
    assert after.store.manifest["extra"]["appended"] == 12


def brute_force_pool(dataset, expanded: list[str], k: int) -> tuple[set[str], set[str]]:
    """The pool built from scratch over U as it is now: (sure members, members at a tie with the
    k-th neighbour), by exhaustive cosine similarity."""
    u_rows = dataset.u_rows
    u_ids = dataset.external_ids(u_rows)
    x = dataset.store.vectors(u_rows)
    at = {item_id: i for i, item_id in enumerate(u_ids)}
    sure, tied = set(), set()
    for item_id in expanded:
        sims = x @ x[at[item_id]]
        sims[at[item_id]] = -np.inf  # itself excluded
        kth = np.sort(sims)[-k]
        sure.update(u_ids[i] for i in np.flatnonzero(sims > kth + 1e-5))
        tied.update(u_ids[i] for i in np.flatnonzero(np.abs(sims - kth) <= 1e-5))
    return sure - set(expanded), tied - set(expanded)


def graph_pool(dataset, expanded: list[str], k: int) -> tuple[set[str], set[str]]:
    """The pool built from scratch over the neighbour graph as it is now (an approximate index's:
    the reference is its lists, not exhaustive kNN): (members, no ties)."""
    lists = dataset.neighbours(k).ids(dataset.row_ids_of(expanded), k)
    members = set(dataset.external_ids(np.unique(lists[lists >= 0])))
    return members - set(expanded), set()


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_after_each_growth_the_pool_is_the_one_built_from_scratch(tmp_path, clinc_slice, cache_dir, factory):
    """Exact index: the pool is exhaustive kNN's. IVF: the graph is extended through the saved
    index, and the pool is the one its lists give, as if built from scratch."""
    from seals_al.campaign import Campaign, CampaignConfig, init
    from seals_al.labeltools.oracle import label_open_batch

    from .test_campaign import write_config

    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "0.csv").write_bytes(clinc_slice.read_bytes())
    cache_dir = tmp_path / "cache" if factory != "Flat" else cache_dir  # its own saved index
    config = write_config(tmp_path, clinc_slice, cache_dir, data=str(folder), index_factory=factory)
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(config), uri)
    Campaign(uri, progress=False).round()
    with CLINC.open(newline="") as f:  # more of the concept and of others, all outside the test split
        more = [
            r for r in csv.DictReader(f) if r["split"] != "test" and r["label"] in ("report_fraud", "cancel")
        ]
    known = {r["id"] for r in csv.DictReader(clinc_slice.open(newline=""))}
    more = [r for r in more if r["id"] not in known]
    for step in (1, 2, 3):
        campaign = Campaign(uri, progress=False)
        labeled = sorted(campaign.state().labeled)[step * 5 : step * 5 + 5]
        texts = dict(
            zip(
                campaign.dataset().prepared.ids_at(np.arange(campaign.dataset().prepared.count)),
                campaign.dataset().prepared.texts_at(np.arange(campaign.dataset().prepared.count)),
                strict=True,
            )
        )
        near = [
            {**more[0], "id": f"near-{step}-{i}", "text": texts[i] + " right now", "label": "x"}
            for i in labeled
        ]
        added = near + more[(step - 1) * 10 : step * 10]
        write_csv(folder / f"{step}.csv", added)
        label_open_batch(campaign)
        campaign = Campaign(uri, progress=False)
        record = campaign.round()
        assert record["round"] == step
        dataset = campaign.dataset()
        assert (record["items_added"], record["items_removed"], record["index_rows"]) == (
            15,
            0,
            dataset.u_count,
        )
        assert campaign.status()["data_version"].startswith(f"{dataset.prepared.key} in round {step}:")
        assert dataset.store.manifest["extra"]["appended"] == 15, "only the new file was embedded"
        graph = dataset.neighbours(campaign.config.learning.k)
        assert graph.manifest["grown_rows"] == 15, "the neighbour graph grown, not built again"
        assert ("updated_rows" in graph.manifest) == (factory != "Flat"), "IVF: extended by its index"
        state = campaign.state()
        expanded = sorted(set(state.labeled) | {row["id"] for row in state.batch})
        with np.load(Path(uri) / f"rounds/{step:03d}/pool/pool.npz") as saved:
            pool = set(dataset.external_ids(saved["ids"]))
            sources = dataset.external_ids(saved["reached_from"])
            reached = dict(zip(dataset.external_ids(saved["ids"]), sources, strict=True))
        reference = brute_force_pool if factory == "Flat" else graph_pool
        sure, tied = reference(dataset, expanded, campaign.config.learning.k)
        assert sure <= pool <= sure | tied, f"step {step}: the kNN of every labeled and selected example"
        # A new item next to a labeled one is selectable in the very round it arrives.
        batch = {row["id"] for row in state.batch}
        for item in near:
            assert item["id"] in pool | batch, item["id"]
            if item["id"] in pool:
                assert reached[item["id"]] in expanded


def recall(graph, exact_ids: np.ndarray, rows: np.ndarray, k: int) -> float:
    """Mean fraction of each row's exact k neighbours that the graph lists."""
    got = graph.ids(rows, k)
    return float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), exact_ids.tolist(), strict=True)])
    )


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_a_grown_graph_is_the_rebuilt_one_for_an_exact_index_and_no_worse_for_ivf(tmp_path, factory):
    from seals_al.index.build import build_index
    from seals_al.index.graph import build_neighbour_graph
    from seals_al.index.graph_growth import grow_neighbour_graph
    from seals_al.store_writer import write_store

    from .conftest import clustered_vectors

    x, _ = clustered_vectors(3000, 32, 40, seed=3)
    store = write_store(tmp_path / "store", [f"i{i}" for i in range(3000)], x, model="m", normalized=True)
    k = 20
    steps = [2400, 2600, 2640, 3000]  # the rows in U after each growth
    rows = np.arange(steps[0])
    graph = build_neighbour_graph(
        build_index(store, rows, factory, progress=False), store, rows, k, tmp_path / "g0", progress=False
    )
    for step, n in enumerate(steps[1:], start=1):
        rows = np.arange(n)
        graph = grow_neighbour_graph(
            graph, store, rows, tmp_path / f"g{step}", chunk_rows=500, progress=False
        )
        assert graph.manifest["grown_rows"] == n - steps[step - 1]
    rebuilt = build_neighbour_graph(
        build_index(store, rows, factory, progress=False), store, rows, k, tmp_path / "r", progress=False
    )
    exact = build_neighbour_graph(
        build_index(store, rows, "Flat", progress=False), store, rows, k, tmp_path / "e", progress=False
    )
    exact_sims, exact_ids = exact.knn(rows, k)
    if factory == "Flat":
        grown_sims, grown_ids = graph.knn(rows, k)
        np.testing.assert_allclose(grown_sims, exact_sims, atol=1e-5)
        # Equal similarities at every position: where an id differs, it is a tie's other member.
        assert np.mean(np.all(grown_ids == exact_ids, axis=1)) > 0.99
    else:
        grown_recall, rebuilt_recall = recall(graph, exact_ids, rows, k), recall(rebuilt, exact_ids, rows, k)
        assert grown_recall >= rebuilt_recall - 0.01, (grown_recall, rebuilt_recall)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "HNSW16"])
def test_an_approximate_graph_is_extended_through_its_saved_index_over_growth_steps(tmp_path, factory):
    """The cache keeps an approximate index beside its graph; each appended store's graph is then
    the base's, extended (the new rows added to that index, old rows updated by reverse kNN), and
    its recall stays within 0.01 of a graph built again with the same factory."""
    from seals_al.index.build import build_index, set_search_parameters
    from seals_al.index.graph import build_neighbour_graph
    from seals_al.index.graph_cache import SAVED_INDEX, cached_neighbour_graph
    from seals_al.store import EmbeddingStore
    from seals_al.store_writer import StoreWriter, write_store

    from .conftest import clustered_vectors

    x, _ = clustered_vectors(3000, 32, 40, seed=3)
    ids = [f"i{i}" for i in range(3000)]
    steps = [2400, 2600, 2640, 3000]
    k, cache = 20, tmp_path / "cache"

    def index_of(store, rows):
        index = build_index(store, rows, factory, progress=False)
        if factory.startswith("IVF"):
            set_search_parameters(index, nprobe=8)
        return index

    def graph_of(store, n):
        rows = np.arange(n)
        return cached_neighbour_graph(
            lambda: index_of(store, rows),
            store, lambda: rows, f"rows {n}", factory, k, cache, progress=False,
        )  # fmt: skip

    store = write_store(tmp_path / "s0", ids[: steps[0]], x[: steps[0]], model="m", normalized=True)
    graph = graph_of(store, steps[0])
    assert (graph.path / SAVED_INDEX).is_file()
    for step, n in enumerate(steps[1:], start=1):
        before, base = steps[step - 1], store
        extra = {"appended_to": base.digest(), "appended": n - before, "base_count": before}
        with StoreWriter(tmp_path / f"s{step}", dim=32, model="m", normalized=True, extra=extra) as writer:
            writer.add_store(base)
            writer.add(ids[before:n], x[before:n], np.arange(before, n))
        store = EmbeddingStore.open(tmp_path / f"s{step}")
        previous, graph = graph, graph_of(store, n)
        assert graph.manifest["grown_rows"] == n - before
        assert graph.manifest["updated_rows"] > 0, "old rows took new neighbours in"
        assert (graph.path / SAVED_INDEX).is_file()
        assert not (previous.path / SAVED_INDEX).exists(), "superseded by the grown index"
    rows = np.arange(steps[-1])
    rebuilt = build_neighbour_graph(index_of(store, rows), store, rows, k, tmp_path / "r", progress=False)
    exact = build_neighbour_graph(
        build_index(store, rows, "Flat", progress=False), store, rows, k, tmp_path / "e", progress=False
    )
    exact_ids = exact.knn(rows, k)[1]
    grown_recall, rebuilt_recall = recall(graph, exact_ids, rows, k), recall(rebuilt, exact_ids, rows, k)
    assert rebuilt_recall > 0.8, "a meaningful reference"
    assert grown_recall >= rebuilt_recall - 0.01, (grown_recall, rebuilt_recall)


@pytest.mark.parametrize(("factory", "trained"), [("IVF8,Flat", True), ("HNSW8", False)])
def test_a_trained_index_is_trained_again_once_u_has_grown_past_the_retrain_fraction(
    tmp_path, factory, trained
):
    """IVF is trained again (and the graph built again) past RETRAIN_GROWTH; HNSW, which is not
    trained, keeps growing by adding."""
    from seals_al.index.build import build_index
    from seals_al.index.graph_cache import SAVED_INDEX, cached_neighbour_graph
    from seals_al.settings import RETRAIN_GROWTH
    from seals_al.store import EmbeddingStore
    from seals_al.store_writer import StoreWriter, write_store

    from .conftest import clustered_vectors

    x, _ = clustered_vectors(2000, 32, 20, seed=5)
    ids = [f"i{i}" for i in range(2000)]
    first, grown = 1000, int(1000 * (1 + RETRAIN_GROWTH)) + 1
    built = []

    def graph_of(store, n):
        rows = np.arange(n)

        def index():
            built.append(n)
            return build_index(store, rows, factory, progress=False)

        return cached_neighbour_graph(index, store, lambda: rows, f"rows {n}", factory, 10, tmp_path / "c")

    base = write_store(tmp_path / "s0", ids[:first], x[:first], model="m", normalized=True)
    before = graph_of(base, first)
    extra = {"appended_to": base.digest(), "appended": grown - first}
    with StoreWriter(tmp_path / "s1", dim=32, model="m", normalized=True, extra=extra) as writer:
        writer.add_store(base)
        writer.add(ids[first:grown], x[first:grown], np.arange(first, grown))
    after = graph_of(EmbeddingStore.open(tmp_path / "s1"), grown)
    assert (after.path / SAVED_INDEX).is_file()
    assert not (before.path / SAVED_INDEX).exists()
    if trained:
        assert built == [first, grown], "trained again on the grown rows, not extended"
        assert "grown_rows" not in after.manifest
        assert after.manifest["trained_on_rows"] == grown
    else:
        assert built == [first], "extended: the saved index took the new rows"
        assert after.manifest["grown_rows"] == grown - first


def test_when_items_leave_and_rows_are_numbered_again_the_pool_is_rebuilt(tmp_path, clinc_slice, cache_dir):
    from seals_al.campaign import Campaign, CampaignConfig, init
    from seals_al.labeltools.oracle import label_open_batch

    from .test_campaign import write_config

    rows = list(csv.DictReader(clinc_slice.open(newline="")))
    leaving = [r for r in rows if r["split"] == "test"][:30]  # never labeled, never selected
    folder = tmp_path / "items"
    folder.mkdir()
    write_csv(folder / "0-leaving.csv", leaving)
    write_csv(folder / "1.csv", [r for r in rows if r not in leaving])
    config = write_config(tmp_path, clinc_slice, cache_dir, data=str(folder), index_factory="Flat")
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(config), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    before = campaign.dataset()
    (folder / "0-leaving.csv").unlink()
    label_open_batch(campaign)
    campaign = Campaign(uri, progress=False)
    assert campaign.round()["round"] == 1
    dataset = campaign.dataset()
    assert "extra" not in dataset.store.manifest, "items left: embedded whole, rows numbered again"
    kept = rows[100]["id"] if rows[100] not in leaving else rows[101]["id"]
    assert dataset.row_ids_of([kept]) != before.row_ids_of([kept])
    state = campaign.state()
    expanded = sorted(set(state.labeled) | {row["id"] for row in state.batch})
    with np.load(Path(uri) / "rounds/001/pool/pool.npz") as saved:
        pool = set(dataset.external_ids(saved["ids"]))
    sure, tied = brute_force_pool(dataset, expanded, campaign.config.learning.k)
    assert sure <= pool <= sure | tied
