"""The neighbour graph built by Beam workers in their own processes, sharing nothing but the
published index and store (a folder, or the GCS emulator): the same graph, row for row, as the
one-process build over the same index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seals_al.errors import SealsError
from seals_al.index.directory import open_index_dir, publish_index_dir
from seals_al.index.graph import build_neighbour_graph
from seals_al.index.graph_pipeline import graph_with_beam
from seals_al.published import materialize, publish
from seals_al.storage import open_storage
from seals_al.store import FORMAT as STORE_FORMAT

from .conftest import storage_root

TWO_WORKER_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
GRAPH_FILES = ("row_ids.npy", "neighbours.npy", "similarities.npy")


@pytest.mark.integration  # Beam worker processes
@pytest.mark.parametrize("where", ["local", "gcs"])
def test_two_worker_processes_build_the_one_process_graph_row_for_row(synthetic, tmp_path, where, request):
    root = storage_root(where, request, tmp_path)
    store_uri, index_uri = f"{root}/published-store", f"{root}/index"
    publish(Path(synthetic.store.uri), store_uri, STORE_FORMAT, progress=False)
    publish_index_dir(synthetic.store, index_uri, "IVF16,Flat", search_params={"nprobe": 4}, recall_queries=0)
    rows = synthetic.row_ids[: len(synthetic.row_ids) - 7]  # U: not every row of the store
    index = open_index_dir(materialize(index_uri, "an index directory", progress=False))
    one = build_neighbour_graph(index, synthetic.store, rows, 10, tmp_path / "one", progress=False)
    work = f"{root}/work" if where == "gcs" else str(tmp_path / "work")
    two = graph_with_beam(
        index_uri,
        store_uri,
        rows,
        10,
        tmp_path / "two",
        work,
        chunk_rows=100,  # 15 elements for the two workers
        beam_args=TWO_WORKER_PROCESSES,
        progress=False,
    )
    for name in GRAPH_FILES:
        assert np.array_equal(np.load(one.path / name), np.load(two.path / name)), name
    assert one.manifest["index"] == two.manifest["index"]
    assert len(two) == len(rows)


def test_a_store_that_is_not_there_fails_naming_it(synthetic, tmp_path):
    index_uri = str(tmp_path / "index")
    publish_index_dir(synthetic.store, index_uri, "Flat", recall_queries=0)
    with pytest.raises(SealsError, match="no-store"):
        graph_with_beam(
            index_uri,
            str(tmp_path / "no-store"),
            synthetic.row_ids,
            5,
            tmp_path / "graph",
            str(tmp_path / "work"),
            progress=False,
        )
    assert not (tmp_path / "graph").exists(), "nothing half-written"


@pytest.mark.hostile
def test_workers_in_containers_are_refused_an_index_on_this_disk(synthetic, tmp_path):
    external = ["--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    with pytest.raises(SealsError, match=r"--environment_type=EXTERNAL: the index, .*index, is on this"):
        graph_with_beam(
            str(tmp_path / "index"), "gs://b/store", synthetic.row_ids, 5, tmp_path / "g", "gs://b/w",
            beam_args=external,
        )  # fmt: skip
    assert not (tmp_path / "g").exists()


def test_chunk_rows_below_one_is_refused(synthetic, tmp_path):
    with pytest.raises(SealsError, match="chunk_rows must be at least 1"):
        graph_with_beam("i", "s", synthetic.row_ids, 5, tmp_path / "g", str(tmp_path / "w"), chunk_rows=0)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_build_index_with_graph_k_puts_the_graph_where_the_first_round_finds_it(
    tmp_path, clinc_slice, where, request, monkeypatch
):
    """`seals-al build-index STORE OUT --graph-k K` (Beam options after it run the queries on
    workers) leaves the graph where a round over that index looks: the round builds none."""
    import csv
    import json

    from seals_al.campaign import Campaign, CampaignConfig, init
    from seals_al.cli import main
    from seals_al.embed.pipeline import ensure_embeddings

    from .test_campaign import write_config

    root = storage_root(where, request, tmp_path)
    with clinc_slice.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] != "test"]  # U: every row of the store
    items = tmp_path / "items.csv"
    with items.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    store, index = f"{root}/embeddings", f"{root}/index"
    ensure_embeddings(str(items), store)
    args = ["build-index", store, index, "--factory", "IVF8,Flat", "--recall-queries", "0", "--graph-k", "10"]
    assert main([*args, *TWO_WORKER_PROCESSES]) == 0
    before = set(open_storage(f"{index}/graphs").list()) if where == "gcs" else set()

    pod = tmp_path / "round-pod"  # the round: a new cache (on gs://, as a new pod has)
    if where == "gcs":
        monkeypatch.setenv("SEALS_CACHE_DIR", str(pod))
    cache = tmp_path / "cache" if where == "local" else pod
    config = write_config(tmp_path, clinc_slice, cache, data=str(items), embeddings=store)
    text = config.read_text().replace('split_column: "split"\n', "") + f"index: {json.dumps(index)}\n"
    config.write_text(text)
    init(CampaignConfig.from_yaml(config), f"{root}/campaign")
    campaign = Campaign(f"{root}/campaign", progress=False)
    campaign.round()
    assert campaign.state().round == 0
    if where == "gcs":
        assert set(open_storage(f"{index}/graphs").list()) == before, "nothing published again"
        assert not (pod / "graphs").exists(), "the round read the published graph, built none"
    else:
        graphs = [p for p in (tmp_path / "cache" / "graphs").iterdir() if p.is_dir()]
        assert len(graphs) == 1, "the round opened the graph build-index left, built no other"
        assert json.loads((graphs[0] / "manifest.json").read_text())["k"] == 10


@pytest.mark.hostile
def test_build_index_refuses_a_factory_workers_cannot_fill_and_a_bad_graph_k_before_building(
    synthetic, tmp_path, capsys
):
    from seals_al.cli import main

    store, out = str(synthetic.store.uri), tmp_path / "index"
    assert main(["build-index", store, str(out), "--direct_num_workers=2"]) == 2
    assert "'Flat': Beam workers fill IVF indexes only" in capsys.readouterr().err
    assert main(["build-index", store, str(out), "--graph-k", "0"]) == 2
    assert "--graph-k must be at least 1" in capsys.readouterr().err
    assert main(["build-index", store, str(out), "--graph-k", "5", "--no_such_beam_option=1"]) == 2
    assert "unknown option(s): --no_such_beam_option" in capsys.readouterr().err
    assert not out.exists(), "refused before any index was built"


def test_the_graph_of_u_over_a_split_is_found_by_the_first_round_on_another_pod(
    tmp_path, clinc_slice, gcs_emulator, monkeypatch, capsys
):
    """What the build_index component runs with graph_k (the pipelines' Beam options set): the
    index of U trained and filled by Beam workers (the same index as in one process; a Flat one,
    which they cannot fill, built in the pod), and the graph of U (the items outside the
    evaluation split) over the index of U, on Beam workers,
    published beside the index; a campaign's first round, in a pod with an empty cache, reads it
    and builds none. Asking again keeps it."""
    import uuid
    from dataclasses import replace

    from seals_al.campaign import Campaign, CampaignConfig, init
    from seals_al.dataset import graph_over_u, index_over_u
    from seals_al.embed.pipeline import ensure_embeddings

    from .conftest import BUCKET
    from .test_campaign import write_config

    root = f"gs://{BUCKET}/graph-of-u/{uuid.uuid4().hex}"
    store, index = f"{root}/embeddings", f"{root}/index"
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "builder"))
    ensure_embeddings(str(clinc_slice), store)
    on_workers = dict(split_column="split", recall_queries=0, beam_args=TWO_WORKER_PROCESSES)
    built_rows = index_over_u(str(clinc_slice), store, index, "IVF8,Flat", **on_workers)[0]["ntotal"]
    index_over_u(str(clinc_slice), store, f"{root}/here", "IVF8,Flat", split_column="split", recall_queries=0)
    built = [materialize(i, "an index", progress=False) / "index.faiss" for i in (index, f"{root}/here")]
    assert built[0].read_bytes() == built[1].read_bytes(), "the same index"
    assert open_storage(f"{index}.work").list() == [], "the workers' scratch is removed"
    flat, _ = index_over_u(str(clinc_slice), store, f"{root}/flat", "Flat", **on_workers)
    assert flat["ntotal"] == built_rows
    assert "Beam workers fill IVF indexes only (IVF{n},Flat" in capsys.readouterr().err
    where = graph_over_u(
        str(clinc_slice), store, index, 10, split_column="split", beam_args=TWO_WORKER_PROCESSES
    )
    assert where.startswith(f"{index}/graphs/k10-")
    published = set(open_storage(f"{index}/graphs").list())
    assert graph_over_u(str(clinc_slice), store, index, 10, split_column="split") == where, "kept"

    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "round-pod"))
    config = CampaignConfig.from_yaml(
        write_config(tmp_path, clinc_slice, tmp_path, embeddings=store, index=index)
    )
    init(replace(config, dataset=replace(config.dataset, cache_dir=None)), f"{root}/campaign")
    campaign = Campaign(f"{root}/campaign", progress=False)
    campaign.round()
    assert campaign.state().round == 0
    assert set(open_storage(f"{index}/graphs").list()) == published, "nothing built or published again"
    assert not (tmp_path / "round-pod" / "graphs").exists()


def test_lists_that_do_not_cover_the_rows_publish_no_graph(synthetic, tmp_path):
    """Parts missing or doubled (a worker's output lost, a range written twice) are an error
    naming the file, and no graph is left behind."""
    from seals_al.index.graph import write_graph

    rows = np.sort(synthetic.row_ids)
    lists = np.zeros((100, 5), np.float32), np.zeros((100, 5), np.int64)
    for chunks, message in (([lists], f"100 of {len(rows):,} rows written"), ([lists] * 20, "do not fit")):
        with pytest.raises(SealsError, match=message):
            write_graph(tmp_path / "graph", synthetic.store, rows, 5, "Flat", chunks, progress=False)
        assert not (tmp_path / "graph").exists()
