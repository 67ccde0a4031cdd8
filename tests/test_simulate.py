"""`seals-al simulate` end to end on a CLINC150 slice with the real model, and its bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seals_al.cli import main
from seals_al.dataset import Dataset
from seals_al.errors import SealsError
from seals_al.settings import DataConfig

ROUNDS, BATCH = 3, 20
SUMMARY_KEYS = {
    "round",
    "labeled",
    "positives",
    "positives_total",
    "recall",
    "pool_size",
    "pool_fraction",
    "average_precision",
    "scored",
    "selected",
    "knn_queries",
}


def simulate(clinc_slice, cache_dir, out, *extra: str) -> int:
    return main(
        [
            "simulate",
            "--data",
            str(clinc_slice),
            "--concept",
            "report_fraud",
            "--out",
            str(out),
            "--cache-dir",
            str(cache_dir),
            "--rounds",
            str(ROUNDS),
            "--batch-size",
            str(BATCH),
            "--k",
            "10",
            *extra,
        ]
    )


def read_selected(out: Path) -> list[list[dict]]:
    return [
        [
            json.loads(line)
            for line in (out / "rounds" / f"{r:03d}" / "selected.jsonl").read_text().splitlines()
        ]
        for r in range(ROUNDS)
    ]


@pytest.mark.parametrize("strategy", ["maxent", "id", "mlp", "random"])
def test_seals_simulation_writes_summary_audit_and_plot(clinc_slice, cache_dir, tmp_path, strategy):
    out = tmp_path / "run"
    assert simulate(clinc_slice, cache_dir, out, "--strategy", strategy) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["concept"] == "report_fraud"
    assert summary["config"]["strategy"] == strategy
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
    assert all(set(r) >= SUMMARY_KEYS for r in rounds)
    assert [r["labeled"] for r in rounds] == [100 + BATCH * r for r in range(ROUNDS + 1)]
    assert all(r["selection_seconds"] >= 0 for r in rounds[:-1])
    assert "selection_seconds" not in rounds[-1], "the last round selects nothing"
    assert [r["selected"] for r in rounds] == [BATCH] * ROUNDS + [0]

    selected = read_selected(out)
    all_ids = [s["id"] for batch in selected for s in batch]
    assert len(all_ids) == len(set(all_ids)) == ROUNDS * BATCH, "an example was selected twice"
    positives = 5
    for r, batch in enumerate(selected):
        assert [s["rank"] for s in batch] == list(range(BATCH))
        assert all(s["strategy"] == strategy and s["round"] == r for s in batch)
        assert all(s["reached_from"] is not None for s in batch)
        assert all(rounds[r]["pool_size"] >= s["pool_size_before"] - BATCH * 10 for s in batch)
        positives += sum(s["label"] for s in batch)
        assert rounds[r + 1]["positives"] == positives
    assert rounds[-1]["recall"] == pytest.approx(positives / rounds[0]["positives_total"])
    for r in rounds:
        assert 0 < r["pool_fraction"] <= 1
        assert 0 <= r["average_precision"] <= 1
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reached_from_is_an_example_labeled_or_selected_before(clinc_slice, cache_dir, tmp_path):
    out = tmp_path / "run"
    assert simulate(clinc_slice, cache_dir, out, "--strategy", "mlp") == 0
    batches = read_selected(out)
    picked_at = {s["id"]: (r, s["rank"]) for r, batch in enumerate(batches) for s in batch}
    reached_from_picks = 0
    for r, batch in enumerate(batches):
        for s in batch:
            assert s["reached_from"] != s["id"]
            source = picked_at.get(s["reached_from"])
            if source is None:
                continue  # a seed: labeled before round 0
            # A pick reaches the pool only through an example expanded before it: a pick of an
            # earlier round, or one ranked higher in this batch.
            assert source < (r, s["rank"]), f"{s['id']} reached from {s['reached_from']}, picked later"
            reached_from_picks += 1
    assert reached_from_picks > 0, "some picks must come from the neighbours of earlier picks"


def test_mlp_finds_positives_and_global_matches_quality(clinc_slice, cache_dir, tmp_path):
    assert simulate(clinc_slice, cache_dir, tmp_path / "seals", "--strategy", "mlp") == 0
    assert simulate(clinc_slice, cache_dir, tmp_path / "global", "--strategy", "mlp", "--mode", "global") == 0
    seals = json.loads((tmp_path / "seals" / "summary.json").read_text())["rounds"]
    glob = json.loads((tmp_path / "global" / "summary.json").read_text())["rounds"]
    # 120 positives of 600 in U: active search should find far more than the 5 seeds
    assert seals[-1]["positives"] >= 40
    assert glob[-1]["pool_size"] == 600 - glob[-1]["labeled"]
    assert abs(seals[-1]["average_precision"] - glob[-1]["average_precision"]) < 0.05
    assert (
        main(["compare", str(tmp_path / "seals"), str(tmp_path / "global"), "--out", str(tmp_path / "c.png")])
        == 0
    )
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_neighbour_graph_and_per_pick_queries_select_the_same(clinc_slice, cache_dir, tmp_path):
    from seals_al.embed.local import embed_texts
    from seals_al.items import read_items

    items = read_items(clinc_slice, ["text"], "id")
    store = embed_texts(items["id"], items["text"], cache_dir=cache_dir, progress=False).path

    def run(name: str, *extra: str) -> list[list[str]]:
        # A private cache per run (the embeddings are the shared store), so whatever is in it
        # afterwards this run put there.
        cache = tmp_path / f"cache-{name}"
        args = ["--embeddings", str(store), "--cache-dir", str(cache), "--strategy", "id", *extra]
        assert simulate(clinc_slice, cache_dir, tmp_path / name, *args) == 0
        return [[s["id"] for s in b] for b in read_selected(tmp_path / name)]

    assert run("graph") == run("live", "--no-knn-graph")
    assert len(list((tmp_path / "cache-graph" / "graphs").iterdir())) == 1, "the graph run builds one graph"
    assert not (tmp_path / "cache-live" / "graphs").exists(), "per-pick queries build no graph"


def test_same_seed_same_selections(clinc_slice, cache_dir, tmp_path):
    for name in ("a", "b"):
        assert simulate(clinc_slice, cache_dir, tmp_path / name, "--strategy", "maxent", "--seed", "3") == 0
    assert simulate(clinc_slice, cache_dir, tmp_path / "c", "--strategy", "maxent", "--seed", "4") == 0
    a, b, c = (read_selected(tmp_path / n) for n in "abc")
    assert a == b
    assert [s["id"] for s in a[0]] != [s["id"] for s in c[0]]


def test_precomputed_npy_embeddings(clinc_slice, cache_dir, tmp_path):
    from seals_al.embed.local import embed_texts
    from seals_al.items import read_items

    items = read_items(clinc_slice, ["text"], "id")
    store = embed_texts(items["id"], items["text"], cache_dir=cache_dir, progress=False)
    np.save(tmp_path / "vectors.npy", store.vectors(store.row_ids_of(items["id"])))
    assert (
        simulate(clinc_slice, cache_dir, tmp_path / "npy", "--embeddings", str(tmp_path / "vectors.npy")) == 0
    )
    assert simulate(clinc_slice, cache_dir, tmp_path / "model") == 0
    # Import re-normalizes (float rounding only), so compare ids exactly and scores closely.
    npy, model = read_selected(tmp_path / "npy"), read_selected(tmp_path / "model")
    assert [[s["id"] for s in b] for b in npy] == [[s["id"] for s in b] for b in model]
    np.testing.assert_allclose(
        [s["score"] for b in npy for s in b], [s["score"] for b in model for s in b], rtol=1e-4
    )


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "unknown_concept",
            "concept 'no_such_intent' is never in the truth column 'label'; known: 'pay_bill'",
        ),
        ("missing_column", "missing column(s) 'split'"),
        ("too_few_positives", "has 120 positives outside the 'test' split; the seed set needs 500"),
        ("empty_file", "the file is empty"),
        ("no_eval_rows", "no rows with split='holdout' to evaluate on"),
        ("bad_factory", "invalid faiss factory string 'IVFx'"),
        ("non_empty_out", "is not empty and holds no earlier simulation"),
        ("negative_budget", "--ram-budget-mb must be 0 or more"),
        ("k_over_u", "k is 100000, but U has"),
        ("lists_over_u", "asks for 100,000 IVF lists, but U has"),
    ],
)
@pytest.mark.hostile
def test_bad_inputs_exit_2_with_one_line_error(clinc_slice, cache_dir, tmp_path, capsys, case, message):
    data, extra, out = clinc_slice, [], tmp_path / "out"
    concept = "report_fraud"
    if case == "unknown_concept":
        concept = "no_such_intent"
    elif case == "missing_column":
        data = write_csv(tmp_path / "nosplit.csv", "id,text,label\na,hello,x\n")
    elif case == "too_few_positives":
        extra = ["--seed-positives", "500"]
    elif case == "empty_file":
        data = write_csv(tmp_path / "empty.csv", "")
    elif case == "no_eval_rows":
        extra = ["--eval-split", "holdout"]
    elif case == "bad_factory":
        extra = ["--index-factory", "IVFx"]
    elif case == "negative_budget":
        extra = ["--ram-budget-mb", "-1"]
    elif case == "k_over_u":
        extra = ["--k", "100000"]
    elif case == "lists_over_u":
        extra = ["--index-factory", "IVF100000,Flat"]
    elif case == "non_empty_out":
        out.mkdir()
        (out / "precious.txt").write_text("keep me")
    code = main(
        [
            "simulate",
            "--data",
            str(data),
            "--concept",
            concept,
            "--out",
            str(out),
            "--cache-dir",
            str(cache_dir),
            "--rounds",
            "1",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, "validation must fail before any work: " + err
    assert message in err
    if case == "non_empty_out":
        assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    else:
        assert not out.exists(), "a rejected run must write nothing"


@pytest.mark.hostile
def test_simulate_never_replaces_what_it_did_not_write(clinc_slice, cache_dir, tmp_path, capsys):
    """An earlier simulation's folder is replaced; a campaign folder that happens to hold a
    summary.json, or a folder with any other file, is refused with nothing deleted."""
    earlier = tmp_path / "earlier"
    assert simulate(clinc_slice, cache_dir, earlier) == 0
    (earlier / "rounds" / "002" / ".selected.jsonl.x1y2.jsonl").write_text("left by a kill -9")
    assert simulate(clinc_slice, cache_dir, earlier, "--seed", "1") == 0, "an earlier simulation is replaced"

    campaign = tmp_path / "campaign"
    (campaign / "rounds" / "000").mkdir(parents=True)
    committed = campaign / "rounds" / "000" / "COMMITTED"
    committed.write_text("{}")
    (campaign / "summary.json").write_text("{}")
    capsys.readouterr()
    assert simulate(clinc_slice, cache_dir, campaign) == 2
    err = capsys.readouterr().err
    assert "holds no earlier simulation (rounds/000/COMMITTED is not a simulation's output)" in err
    assert committed.read_text() == "{}", "a campaign's committed round is never deleted"
    assert sorted(p.name for p in campaign.iterdir()) == ["rounds", "summary.json"]


def test_console_script_exit_codes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).parent / "seals-al"
    ok = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0
    assert ok.stdout.startswith("seals-al ")
    bad = subprocess.run(
        [
            str(exe),
            "simulate",
            "--data",
            str(tmp_path / "missing.csv"),
            "--concept",
            "x",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: {tmp_path / 'missing.csv'}: no such file"
    required = ["--data", "d.csv", "--concept", "x", "--out", str(tmp_path / "o")]
    unknown_flag = subprocess.run(
        [str(exe), "simulate", *required, "--dta", "x"], capture_output=True, text=True, env=env, check=False
    )
    assert unknown_flag.returncode == 2
    assert "unrecognized arguments: --dta x" in unknown_flag.stderr


def test_a_cached_graph_spares_the_index_build(clinc_slice, cache_dir, tmp_path):
    from seals_al.dataset import Dataset
    from seals_al.embed.local import embed_texts
    from seals_al.items import read_items
    from seals_al.settings import DataConfig, RoundConfig
    from seals_al.simulate import SimulationConfig
    from seals_al.simulate import simulate as run

    items = read_items(clinc_slice, ["text"], "id")
    store = embed_texts(items["id"], items["text"], cache_dir=cache_dir, progress=False)
    # A private cache for the graph, so no other test has built it already.
    config = DataConfig(
        data=str(clinc_slice),
        truth_column="label",
        split_column="split",
        embeddings=str(store.path),
        cache_dir=str(tmp_path / "cache"),
    )
    sim = SimulationConfig(concept="timer", learning=RoundConfig(batch_size=10, k=10), rounds=2)

    def outcome(summary: dict) -> list[tuple]:
        return [
            (r["labeled"], r["positives"], r["pool_size"], r["average_precision"]) for r in summary["rounds"]
        ]

    first = Dataset.prepare(config, progress=False)
    expected = outcome(run(first, sim, progress=False))
    assert first._index is not None, "the first run builds the index to build the graph"
    second = Dataset.prepare(config, progress=False)
    assert outcome(run(second, sim, progress=False)) == expected
    assert second._index is None, "with the graph cached, no index is built"


@pytest.mark.hostile
def test_a_built_index_must_cover_exactly_u(tmp_path):
    """index_over_u leaves the evaluation split out (so it is never a neighbour) and is reused
    when nothing changed; an index over other rows is refused by name; texts beside given
    embeddings are read for the labelers."""
    from seals_al.dataset import index_over_u
    from seals_al.index.directory import build_index_dir
    from seals_al.store_writer import write_store

    rng = np.random.default_rng(0)
    ids = [f"item-{i}" for i in range(120)]
    vectors = rng.normal(size=(120, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = write_store(tmp_path / "store", ids, vectors, model="t", normalized=True)
    items = tmp_path / "items.csv"
    items.write_text(
        "id,text,split\n"
        + "".join(f"{i},text {i},{'test' if n % 4 == 0 else 'train'}\n" for n, i in enumerate(ids))
    )
    manifest, reused = index_over_u(
        str(items), str(store.path), str(tmp_path / "ix"), "Flat", split_column="split"
    )
    assert (manifest["ntotal"], reused) == (90, False)
    assert index_over_u(str(items), str(store.path), str(tmp_path / "ix"), "Flat", split_column="split")[1]
    config = DataConfig(
        data=str(items),
        split_column="split",
        embeddings=str(store.path),
        index=str(tmp_path / "ix"),
        cache_dir=str(tmp_path / "cache"),
    )
    dataset = Dataset.prepare(config, progress=False)
    assert dataset.items().texts[1] == "text item-1"
    _, neighbours = dataset.neighbours(5, progress=False).knn(dataset.u_rows[:10], 5)
    assert not set(neighbours.ravel().tolist()) & set(dataset.eval_rows.tolist()), (
        "no evaluation row is a neighbour"
    )
    build_index_dir(store, tmp_path / "all", "Flat", recall_queries=0, progress=False)
    everything = Dataset.prepare(replace(config, index=str(tmp_path / "all")), progress=False)
    with pytest.raises(
        SealsError, match=r"all: the index was not built over U \(90 rows outside the 'test' split\)"
    ):
        everything.neighbours(5, progress=False)
