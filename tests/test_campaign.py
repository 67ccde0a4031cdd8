"""Campaigns with human labels, on a local folder and on GCS (a real emulator server), driven by
label files, the terminal labeler, crashes and a concurrent second round."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seals_al.campaign import Campaign, CampaignConfig, ensure_campaign, init
from seals_al.campaign.lease import Lease
from seals_al.cli import main
from seals_al.errors import SealsError
from seals_al.storage import open_storage
from seals_al.storage.local import LocalStorage

from .conftest import BUCKET, modules_loaded_by

CONCEPT = "report_fraud"
BATCH = 10
EXE = str(Path(sys.executable).parent / "seals-al")


def truth_of(clinc_slice: Path) -> dict[str, int]:
    with clinc_slice.open(newline="") as f:
        return {row["id"]: int(row["label"] == CONCEPT) for row in csv.DictReader(f)}


def write_config(tmp_path: Path, clinc_slice: Path, cache_dir: Path, **extra) -> Path:
    with clinc_slice.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] != "test"]
    positives = [r["id"] for r in rows if r["label"] == CONCEPT][:5]
    negatives = [r["id"] for r in rows if r["label"] != CONCEPT][::5][:95]
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(
        "id,label\n" + "".join(f"{i},1\n" for i in positives) + "".join(f"{i},0\n" for i in negatives)
    )
    settings = {
        "concept": CONCEPT,
        "data": str(clinc_slice),
        "seed_labels": "seeds.csv",
        "strategy": "mlp",
        "k": 10,
        "batch_size": BATCH,
        "budget": 200,
        "truth_column": "label",
        "split_column": "split",
        "cache_dir": str(cache_dir),
        **extra,
    }
    path = tmp_path / "campaign.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
    return path


@pytest.fixture(params=["local", "gcs"])
def campaign_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "campaign")
    request.getfixturevalue("gcs_emulator")
    return f"gs://{BUCKET}/campaigns/{uuid.uuid4().hex}"


@pytest.fixture
def campaign(tmp_path, clinc_slice, cache_dir, campaign_uri) -> Campaign:
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir)), campaign_uri)
    return Campaign(campaign_uri, progress=False)


def open_batch(c: Campaign) -> list[dict]:
    return c.state().pending


def snapshot(c: Campaign) -> dict[str, bytes]:
    return {k: c.storage.read_bytes(k) for k in c.storage.list() if k != "LOCK"}


def test_three_rounds_from_csv_jsonl_and_label_studio(tmp_path, clinc_slice, cache_dir, campaign_uri):
    truth = truth_of(clinc_slice)
    data = str(clinc_slice)
    if campaign_uri.startswith("gs://"):  # the items live in the bucket too
        data = f"{campaign_uri}-items/slice.csv"
        open_storage(f"{campaign_uri}-items").write_bytes("slice.csv", clinc_slice.read_bytes())
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, data=data)), campaign_uri)
    c = Campaign(campaign_uri, progress=False)
    assert c.round()["labeled"] == 100
    st = c.storage

    batch = open_batch(c)
    assert len(batch) == BATCH
    st.write_text(
        "inbox/000/labels.csv", "id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in batch)
    )
    first = c.round()
    assert first["round"] == 1
    assert first["labeled"] == 110

    batch = open_batch(c)
    words = {1: CONCEPT, 0: "no"}  # the concept's name and plain yes/no both count
    st.write_text(
        "inbox/001/a.jsonl",
        "".join(json.dumps({"id": r["id"], "label": words[truth[r["id"]]]}) + "\n" for r in batch),
    )
    assert c.round()["labeled"] == 120

    tasks = st.read_json("rounds/002/to_label.labelstudio.json")
    assert [t["data"]["seals_id"] for t in tasks] == [r["id"] for r in open_batch(c)]
    for task in tasks:  # what Label Studio exports once a person has answered
        choice = CONCEPT if truth[task["data"]["seals_id"]] else f"not {CONCEPT}"
        task["annotations"] = [
            {
                "result": [
                    {
                        "type": "choices",
                        "from_name": "label",
                        "to_name": "text",
                        "value": {"choices": [choice]},
                    }
                ],
                "was_cancelled": False,
            }
        ]
    st.write_json("inbox/002/export.json", tasks)
    third = c.round()
    assert third["labeled"] == 130

    state = c.state()
    assert state.round == 3
    assert third["positives"] == sum(truth[i] for i in state.labeled)
    # The data never changed: the round records are as they always were.
    assert not {"items_added", "items_removed", "index_rows"} & {*first, *third}
    assert {row["source"] for row in state.labeled.values()} == {
        "seed/seeds.csv",
        "inbox/000/labels.csv",
        "inbox/001/a.jsonl",
        "inbox/002/export.json",
    }
    for r, key in ((1, "inbox/000/labels.csv"), (2, "inbox/001/a.jsonl"), (3, "inbox/002/export.json")):
        (entry,) = [e for e in st.read_json(f"rounds/{r:03d}/ingested.json") if e["file"] == key]
        assert entry["copy"].startswith(f"rounds/{r:03d}/ingested/")
        assert st.read_bytes(entry["copy"]) == st.read_bytes(key), "the raw label file is kept"
    assert st.read_bytes("inbox/000/labels.csv").startswith(b"id,label\n"), "the inbox is left untouched"

    before = snapshot(c)
    assert c.round() is None, "no new labels: nothing to do"
    assert snapshot(c) == before, "a second round with no new labels changes nothing"


def test_partial_labels_stay_pending_and_relabels_are_recorded(campaign, clinc_slice):
    truth = truth_of(clinc_slice)
    campaign.round()
    batch = open_batch(campaign)
    half = batch[:4]
    campaign.storage.write_text(
        "inbox/000/part.csv", "id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in half)
    )
    metrics = campaign.round()
    assert metrics["labeled"] == 104
    new_batch = campaign.state().batch
    carried = [r for r in new_batch if r.get("carried_over")]
    assert [r["id"] for r in carried] == [r["id"] for r in batch[4:]], "the unlabeled rest stays pending"
    assert len(new_batch) == BATCH

    campaign.storage.write_text(
        "inbox/001/again.csv", "id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in half)
    )
    before = snapshot(campaign)
    assert campaign.round() is None, "a new file that only repeats known labels changes nothing"
    assert snapshot(campaign) == before
    campaign.storage.delete("inbox/001/again.csv")

    seed_id = next(i for i, row in campaign.state().labeled.items() if row["source"] == "seed/seeds.csv")
    old = campaign.state().labeled[seed_id]["label"]
    fix = json.dumps({"id": seed_id, "label": 1 - old}) + "\n"
    campaign.storage.write_text("inbox/001/fix.jsonl", fix)
    campaign.round()
    relabels = campaign.storage.read_text("rounds/002/relabels.jsonl").splitlines()
    sha256 = hashlib.sha256(fix.encode()).hexdigest()
    assert [json.loads(line) for line in relabels] == [
        {
            "id": seed_id,
            "old": old,
            "new": 1 - old,
            "round": 2,
            "source": "inbox/001/fix.jsonl",
            "sha256": sha256,
        }
    ]
    assert campaign.state().labeled[seed_id]["label"] == 1 - old
    history = [json.loads(x) for x in campaign.storage.read_text("rounds/001/labeled.jsonl").splitlines()]
    assert {r["id"]: r["label"] for r in history}[seed_id] == old, "earlier versions keep the old label"


@pytest.mark.hostile
def test_two_files_of_one_round_that_disagree_are_rejected_naming_both(campaign, clinc_slice):
    """Neither file wins by the order of its name: the later one is rejected, nothing is staged,
    and once one of the two is gone the round goes on."""
    truth = truth_of(clinc_slice)
    campaign.round()
    first = open_batch(campaign)[0]["id"]
    campaign.storage.write_text("inbox/000/a.csv", f"id,label\n{first},{truth[first]}\n")
    campaign.storage.write_text(
        "inbox/000/b.jsonl", json.dumps({"id": first, "label": 1 - truth[first]}) + "\n"
    )
    before = snapshot(campaign)
    with pytest.raises(SealsError) as e:
        campaign.round()
    assert str(e.value) == (
        f"{campaign.storage.where('inbox/000/b.jsonl')}: rejected, nothing ingested: file: id {first!r} "
        f"labeled {1 - truth[first]} here and {truth[first]} in inbox/000/a.csv"
    )
    reports = [k for k in campaign.storage.list("reports") if k.startswith("reports/inbox_000_b.jsonl-")]
    assert len(reports) == 1
    assert {k: v for k, v in snapshot(campaign).items() if not k.startswith("reports/")} == before
    campaign.storage.delete("inbox/000/b.jsonl")
    assert campaign.round()["labeled"] == 101


@pytest.mark.hostile
def test_stray_files_and_folders_under_rounds_are_no_rounds(campaign):
    campaign.ingest()  # round 0 staged, not committed: an interrupted round
    assert campaign.status()["interrupted_round"] == "000"
    campaign.round()
    campaign.storage.write_text("rounds/tmp/notes.txt", "mine")
    campaign.storage.write_text("rounds/latest", "000")
    assert campaign.committed_rounds() == [0]
    assert campaign.status()["interrupted_round"] is None


@pytest.mark.hostile
def test_labels_that_arrive_after_their_round_committed_are_taken_in(campaign, clinc_slice):
    """A file dropped into an older inbox after its round committed, or a labeler still saving
    there, is ingested by the next round: its examples were carried over, never dropped."""
    truth = truth_of(clinc_slice)
    campaign.round()
    batch = open_batch(campaign)
    campaign.storage.write_text(
        "inbox/000/part.csv", "id,label\n" + f"{batch[0]['id']},{truth[batch[0]['id']]}\n"
    )
    campaign.round()
    assert campaign.intake(1) == [
        "inbox/000/part.csv: 1 new, 0 relabeled, 0 unchanged",
        f"{BATCH - 1} example(s) of earlier batches still unlabeled, carried over into batch 1",
    ]
    late = batch[1]["id"]
    assert late in {r["id"] for r in open_batch(campaign)}, "the unlabeled rest was carried over"
    campaign.storage.write_text("inbox/000/late.csv", f"id,label\n{late},{truth[late]}\n")
    status = campaign.status()
    assert status["new_label_files"] == 1
    assert status["label_files"] == [
        "inbox/000/late.csv: late (batch 0 has closed); the next round takes it in"
    ]
    metrics = campaign.round()
    assert metrics["labeled"] == 102
    assert campaign.intake(2)[0] == (
        "inbox/000/late.csv: 1 new, 0 relabeled, 0 unchanged (late: batch 0 had closed; its labels count "
        "from round 2)"
    )
    assert campaign.state().labeled[late] == {
        "id": late,
        "label": truth[late],
        "round": 2,
        "source": "inbox/000/late.csv",
        "sha256": hashlib.sha256(campaign.storage.read_bytes("inbox/000/late.csv")).hexdigest(),
    }
    assert campaign.round() is None, "taken in once"


BAD_FILES = [
    ("unknown.csv", "id,label\nnobody-0001,1\n", "line 2: id 'nobody-0001' is not an item of this campaign"),
    ("held_out.csv", "id,label\n{held_out},1\n", "id '{held_out}' is in the evaluation split, held out"),
    (
        "conflict.csv",
        "id,label\n{first},1\n{first},0\n",
        "line 3: id '{first}' labeled 1 at line 2 and 0 here",
    ),
    ("invalid.csv", "id,label\n{first},maybe\n", "line 2: invalid label 'maybe'"),
    ("columns.csv", "item,answer\n{first},1\n", "line 1: expected columns id,label"),
    ("empty.jsonl", "", "file: empty"),
    ("truncated.jsonl", '{{"id": "{first}", "label": 1}}\n{{"id": "{second}", "la', "line 2: truncated"),
    ("latin1.csv", None, "not valid UTF-8"),
    ("notes.txt", "id,label\n", "unsupported label file type"),
    ("studio.json", '{{"tasks": []}}', "expected a Label Studio export"),
]


def test_a_label_found_outside_the_batch_is_taken_in_and_its_neighbours_join_the_pool(campaign, clinc_slice):
    """A person who finds the concept elsewhere labels it: any item of U may be labeled, not only
    the open batch; it is recorded as found outside the batch, and it expands the pool as a
    labeled batch item does (its neighbours become candidates)."""
    import io

    campaign.round()
    state, truth = campaign.state(), truth_of(clinc_slice)
    items = campaign.dataset().items()
    batch = {row["id"] for row in state.batch}
    elsewhere = [
        i for i, held in zip(items.ids, items.is_eval, strict=True)
        if not held and i not in batch and i not in state.labeled and truth[i] == 1
    ]  # fmt: skip
    found = elsewhere[0]
    rows = "".join(f"{i},{truth[i]}\n" for i in sorted(batch)) + f"{found},1\n"
    campaign.storage.write_text("inbox/000/labels.csv", "id,label\n" + rows)
    assert campaign.round()["labeled"] == 100 + BATCH + 1
    labeled = campaign.state().labeled
    assert labeled[found]["outside_batch"] is True
    assert not any(labeled[i].get("outside_batch") for i in batch)
    assert "1 found outside the batch" in campaign.intake(1)[0]
    pool = np.load(io.BytesIO(campaign.storage.read_bytes("rounds/001/pool/pool.npz")))
    row = campaign.dataset().row_ids_of([found])[0]
    assert row in set(pool["expanded"].tolist()), "its neighbours joined the pool"
    from seals_al.report import round_report

    report = round_report(campaign)
    assert "1 found outside the batch" in report.html
    assert "- 1 label(s) so far found by people outside the batches" in report.markdown


@pytest.mark.hostile
@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_bad_label_files_are_rejected_whole(campaign, clinc_slice, name, content, message):
    campaign.round()
    batch = open_batch(campaign)
    other = next(
        i
        for i in campaign.dataset().items().ids
        if i not in {r["id"] for r in batch} and i not in campaign.state().labeled and not i.startswith("x")
    )
    with clinc_slice.open(newline="") as f:
        held_out = next(row["id"] for row in csv.DictReader(f) if row["split"] == "test")
    fill = {"first": batch[0]["id"], "second": batch[1]["id"], "other": other, "held_out": held_out}
    data = "caf\xe9".encode("latin-1") if content is None else content.format(**fill).encode()
    key = f"inbox/000/{name}"
    campaign.storage.write_bytes(key, data)
    good = "inbox/000/good.csv"  # a valid file beside it is not ingested either: the round stops
    campaign.storage.write_text(good, f"id,label\n{batch[2]['id']},1\n")
    before = snapshot(campaign)
    with pytest.raises(SealsError) as error:
        campaign.round()
    assert str(error.value).startswith(campaign.storage.where(key))
    assert message.format(**fill) in str(error.value)
    after = snapshot(campaign)
    assert campaign.state().round == 0, "nothing committed"
    assert after[key] == data, "the rejected file is kept untouched"
    reports = [k for k in after if k.startswith("reports/")]
    assert len(reports) == 1
    assert json.loads(after[reports[0]])["rejected"] is True
    assert f"{key}: rejected, see {campaign.storage.where(reports[0])}" in campaign.status()["label_files"]
    assert {k: v for k, v in after.items() if not k.startswith("reports/")} == before


@pytest.mark.hostile
def test_items_the_campaign_has_used_must_stay_in_the_items_file(tmp_path, clinc_slice, cache_dir):
    """The items file may change between rounds (it is prepared again), but an item removed while
    it is out for labeling is a clear error naming the items file, not a lookup failure later."""
    items = tmp_path / "items.csv"
    shutil.copy(clinc_slice, items)
    config = write_config(tmp_path, items, cache_dir)
    init(CampaignConfig.from_yaml(config), str(tmp_path / "c"))
    campaign = Campaign(str(tmp_path / "c"), progress=False)
    campaign.round()
    batch = [row["id"] for row in open_batch(campaign)]
    truth = truth_of(items)
    lines = items.read_text().splitlines(keepends=True)
    items.write_text("".join(line for line in lines if not line.startswith(f"{batch[0]},")))
    campaign.storage.write_text("inbox/000/l.csv", f"id,label\n{batch[1]},{truth[batch[1]]}\n")
    before = snapshot(campaign)
    with pytest.raises(SealsError) as error:
        Campaign(str(tmp_path / "c"), progress=False).round()
    assert str(error.value) == (
        f"{items}: 1 item(s) this campaign has labeled or sent out for labeling are no longer in it "
        f"(the first: {batch[0]!r}); put them back, list them in the tombstone list (the removed "
        "setting), or start a new campaign over the new items"
    )
    assert snapshot(campaign) == before, "nothing written"


@pytest.mark.hostile
def test_config_errors(tmp_path, clinc_slice, cache_dir):
    good = write_config(tmp_path, clinc_slice, cache_dir)

    def with_setting(name: str, value: str) -> str:
        """The good config with one setting given this value (in place: a setting given twice is
        an error of its own)."""
        lines = [line for line in good.read_text().splitlines() if not line.startswith(f"{name}:")]
        return "".join(f"{line}\n" for line in lines) + f"{name}: {value}\n"

    def with_data(value: str) -> str:
        return with_setting("data", value)

    cases = {
        "unknown": ("concept: x\ndata: d\nseed_labels: s\ncolour: blue\n", "unknown setting(s) colour"),
        "missing": ("concept: x\n", "missing setting(s) data, seed_labels"),
        "list": ("- a\n- b\n", "expected a mapping of settings"),
        "python": (
            "concept: !!python/object/apply:os.system ['true']\n",
            "not valid YAML: line 1, column 10: could not determine a constructor for the tag",
        ),
        "batch": (with_setting("batch_size", "0"), "batch_size must be a positive integer"),
        # Wrong types are refused at init, not left to break every later round.
        "k as text": (with_setting("k", '"10"'), "k must be an integer, got '10'"),
        "budget as a boolean": (with_setting("budget", "true"), "budget must be an integer, got True"),
        "graph as text": (
            with_setting("knn_graph", "maybe"),
            "knn_graph must be true or false, got 'maybe'",
        ),
        "column as a list": (
            with_setting("id_column", "[a, b]"),
            "id_column must be a string, got ['a', 'b']",
        ),
        "C not positive": (with_setting("C", "0"), "C must be a positive number, got 0.0"),
        "C infinite": (with_setting("C", ".inf"), "C must be a positive number, got inf"),
        "a setting twice": (good.read_text() + "k: 7\n", "setting 'k' is given more than once"),
        "seed negative": (with_setting("seed", "-1"), "seed must be an integer from 0 to 4,294,967,295"),
        "seed too large": (with_setting("seed", f"{10**20}"), f"got {10**20}"),
        "data a number": (with_data("5"), "data must be a string, got 5"),
        "data a list": (with_data("[a, b]"), "data must be a string, got ['a', 'b']"),
        "data nested": (with_data("{a: {b: {c: 1}}}"), "data must be a string, got {'a': {'b': {'c': 1}}}"),
        "embeddings a list": (with_setting("embeddings", "[a]"), "embeddings must be a string or empty"),
        "alias bomb": (
            good.read_text() + 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: &c [*b, *b]\n',
            f"line {len(good.read_text().splitlines()) + 2}: aliases (*name) are not allowed",
        ),
        "long value": (
            good.read_text() + f"eval_split: {list(range(100))}\n",
            "eval_split must be a string, got [0, 1, 2,",
        ),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(SealsError, match=re.escape(message)) as error:
            CampaignConfig.from_yaml(path)
        assert "\n" not in str(error.value), "one line, even where PyYAML's own message has several"
    init(CampaignConfig.from_yaml(good), str(tmp_path / "c"))
    with pytest.raises(SealsError, match="a campaign exists here already"):
        init(CampaignConfig.from_yaml(good), str(tmp_path / "c"))
    # Never mixed into a folder of other files; a folder an interrupted init left its seed in is fine.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(
        SealsError, match=re.escape("mine: not empty ('notes.txt' is there) and not a campaign")
    ):
        init(CampaignConfig.from_yaml(good), str(tmp_path / "mine"))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    shutil.copytree(tmp_path / "c" / "seed", tmp_path / "interrupted" / "seed")
    init(CampaignConfig.from_yaml(good), str(tmp_path / "interrupted"))
    # A seed from the evaluation split is named as such.
    with clinc_slice.open(newline="") as f:
        held_out = next(row["id"] for row in csv.DictReader(f) if row["split"] == "test")
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(seeds.read_text() + f"{held_out},1\n")
    with pytest.raises(
        SealsError, match=f"id '{held_out}' is in the evaluation split, held out from labeling"
    ):
        init(CampaignConfig.from_yaml(good), str(tmp_path / "held-out"))
    with pytest.raises(SealsError, match="not a campaign"):
        Campaign(str(tmp_path / "nowhere"))


def run_cli(
    *args: str, cache_dir: Path, failpoint: str | None = None, env_extra: dict | None = None, **kwargs
) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEALS_CACHE_DIR": str(cache_dir), **(env_extra or {})}
    env.pop("SEALS_FAILPOINT", None)
    if failpoint:
        env["SEALS_FAILPOINT"] = failpoint
    return subprocess.Popen(
        [EXE, *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )


def prepared(tmp_path: Path, uri: str, name: str, clinc_slice: Path, cache_dir: Path) -> Campaign:
    """A campaign after round 0 with the whole first batch answered in its inbox."""
    root = tmp_path / name
    root.mkdir()
    uri = f"{uri}-{name}"
    init(CampaignConfig.from_yaml(write_config(root, clinc_slice, cache_dir)), uri)
    c = Campaign(uri, progress=False)
    c.round()
    truth = truth_of(clinc_slice)
    c.storage.write_text(
        "inbox/000/l.csv", "id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in open_batch(c))
    )
    return c


def round_outcome(c: Campaign, r: int) -> dict:
    metrics = c.storage.read_json(f"rounds/{r:03d}/metrics.json")
    metrics.pop("selection_seconds")
    return {
        "labeled": c.storage.read_text(f"rounds/{r:03d}/labeled.jsonl"),
        "batch": c.storage.read_text(f"rounds/{r:03d}/to_label.jsonl"),
        "model": c.storage.read_text(f"rounds/{r:03d}/model.json"),
        "pool": c.storage.read_bytes(f"rounds/{r:03d}/pool/pool.npz"),
        "metrics": metrics,
    }


@pytest.mark.hostile
@pytest.mark.parametrize("point", ["after_ingest", "after_train", "during_publish"])
def test_a_round_killed_at_each_step_is_finished_by_the_next_run(
    tmp_path, clinc_slice, cache_dir, campaign_uri, point
):
    reference = prepared(tmp_path, campaign_uri, "reference", clinc_slice, cache_dir)
    reference.round()
    c = prepared(tmp_path, campaign_uri, "crashed", clinc_slice, cache_dir)
    crashed = run_cli("round", str(c.storage.uri), cache_dir=cache_dir, failpoint=point)
    assert crashed.wait(timeout=120) == 137
    assert c.state().round == 0, "the killed round is not committed"
    status = c.status()
    assert status["lock"].startswith(f"pid {crashed.pid} on {os.uname().nodename}, expires in "), (
        "the dead process left its lease"
    )
    assert status["interrupted_round"] == "001", "the staged round shows as interrupted"
    rerun = run_cli("round", str(c.storage.uri), cache_dir=cache_dir)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "round 1 committed" in out
    assert round_outcome(c, 1) == round_outcome(reference, 1), "same result as a round that never crashed"
    labeled = c.state().labeled
    assert len(labeled) == 110, "no label lost"
    assert sorted(labeled) == sorted(reference.state().labeled), "nor duplicated or changed"
    assert not c.storage.exists("LOCK")


@pytest.mark.hostile
def test_a_second_concurrent_round_fails_clearly(tmp_path, clinc_slice, cache_dir, campaign_uri):
    """On a local disk and on gs:// (fake-gcs-server enforces the preconditions the lease is built
    on): of two concurrent rounds exactly one commits."""
    c = prepared(tmp_path, campaign_uri, "busy", clinc_slice, cache_dir)
    first = run_cli("round", str(c.storage.uri), cache_dir=cache_dir, failpoint="after_train:sleep")
    deadline = time.monotonic() + 60
    while not c.storage.exists("LOCK") and time.monotonic() < deadline:
        time.sleep(0.1)
    second = run_cli("round", str(c.storage.uri), cache_dir=cache_dir)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert "another stage holds the campaign for " in err
    assert f"(pid {first.pid} on {os.uname().nodename}, its lease runs " in err
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert c.state().round == 0
    third = run_cli("round", str(c.storage.uri), cache_dir=cache_dir)
    assert third.wait(timeout=120) == 0, third.stderr.read()
    assert c.state().round == 1
    assert len(c.state().labeled) == 110


@pytest.mark.hostile
def test_a_lease_held_on_another_host_is_respected_until_it_expires(
    tmp_path, clinc_slice, cache_dir, campaign_uri
):
    """A lease written on another machine cannot be checked from here (its process may be alive
    there): it is respected while it runs, and taken over once it has expired (its holder was
    killed, OOM-killed or preempted: no renewal came)."""
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir)), campaign_uri)
    campaign = Campaign(campaign_uri, progress=False)
    now = time.time()
    held = {"holder": "x", "pid": 7, "host": "pod-gone-1", "since": now - 3700, "expires": now + 100}
    campaign.storage.write_json("LOCK", held)
    lock = campaign.storage.where("LOCK")
    with pytest.raises(SealsError) as error:
        campaign.round()
    assert str(error.value) == (
        f"{lock}: another stage holds the campaign for 61 min (pid 7 on pod-gone-1, its lease runs 99 s "
        "more unless renewed) (its process, on another machine, cannot be checked); try again when it "
        "ends: an abandoned lease expires by itself"
    )
    assert campaign.status()["lock"].startswith("pid 7 on pod-gone-1, expires in ")
    campaign.storage.write_json("LOCK", {**held, "expires": now - 1})
    assert campaign.status()["lock"].startswith("pid 7 on pod-gone-1, expired ")
    assert campaign.round()["round"] == 0, "the expired lease was taken over"
    assert not campaign.storage.exists("LOCK"), "and released"


def test_a_lease_from_another_container_on_this_host_is_not_judged_by_its_pid(tmp_path):
    """Containers with host networking share the host name, not their pids: a pid that is not
    alive here may be alive in the holder's container, so only the expiry frees its lease."""
    import socket

    from seals_al.campaign.lease import Lease

    storage = open_storage(str(tmp_path / "c"))
    now = time.time()
    held = {"holder": "x", "pid": 2**22 - 1, "host": socket.gethostname(), "expires": now + 100}
    storage.write_json("LOCK", {**held, "pids": "pid:[1]"})
    with pytest.raises(SealsError, match="another stage holds the campaign"), Lease(storage):
        pass
    storage.write_json("LOCK", {**held, "pids": Lease(storage).mine["pids"]})
    with Lease(storage) as lease:  # the same pid namespace: its process is known to be gone
        assert lease.mine["pids"].startswith("pid:[")


@pytest.mark.hostile
def test_a_working_stage_renews_its_lease_and_a_killed_one_loses_it(
    tmp_path, clinc_slice, cache_dir, campaign_uri
):
    """With a 3 s lease, a stage that works for longer keeps it (renewed every second); killed, it
    stops renewing, and after its expiry the next run takes over and commits."""
    c = prepared(tmp_path, campaign_uri, "lease", clinc_slice, cache_dir)
    env = {"SEALS_LEASE_SECONDS": "3"}
    first = run_cli(
        "round", str(c.storage.uri), cache_dir=cache_dir, failpoint="after_train:sleep", env_extra=env
    )
    deadline = time.monotonic() + 60
    while not c.storage.exists("LOCK") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(7)  # well past the lease's first expiry: only renewals keep it
    second = run_cli("round", str(c.storage.uri), cache_dir=cache_dir, env_extra=env)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert "another stage holds the campaign for " in err
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    time.sleep(4)  # its lease runs out
    third = run_cli("round", str(c.storage.uri), cache_dir=cache_dir, env_extra=env)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert c.state().round == 1
    assert not c.storage.exists("LOCK")


def test_a_stage_that_lost_its_lease_never_commits(tmp_path):
    """Another process took the lease over (this one stalled past its expiry): the renewal finds the
    lease changed, and the check before a commit refuses; leaving does not delete the new lease."""
    storage = LocalStorage(tmp_path)
    with Lease(storage, seconds=3) as lease:
        lease.check()
        storage.write_json("LOCK", {"holder": "someone else", "pid": 1, "host": "elsewhere"})
        error, deadline = None, time.monotonic() + 10
        while error is None and time.monotonic() < deadline:  # the next renewal (every 1 s) meets it
            try:
                lease.check()
            except SealsError as e:
                error = e
            time.sleep(0.05)
    assert (
        "another stage took the lease over, or it was broken (seals-al unlock); nothing was committed"
        in str(error)
    )
    assert storage.read_json("LOCK")["holder"] == "someone else"


@pytest.mark.hostile
@pytest.mark.parametrize("expires", [float("nan"), float("inf"), 32_503_680_000.0])
def test_a_lease_that_never_ends_is_broken_and_taken_over(tmp_path, expires):
    """A LOCK saying NaN, Infinity or the year 3000 blocked every stage forever; no holder writes
    one (leases last at most a day), so any stage may take it over."""
    storage = LocalStorage(tmp_path)
    held = {"holder": "x", "pid": 7, "host": "pod-gone-1", "since": time.time(), "expires": expires}
    (tmp_path / "LOCK").write_text(json.dumps(held))
    with Lease(storage, seconds=5) as lease:
        lease.check()
        assert storage.read_json("LOCK")["holder"] == lease.mine["holder"]


@pytest.mark.hostile
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "86401", "soon"])
def test_a_lease_length_that_is_not_a_finite_time_is_refused(monkeypatch, value):
    from seals_al.campaign.lease import lease_seconds

    monkeypatch.setenv("SEALS_LEASE_SECONDS", value)
    with pytest.raises(SealsError, match=re.escape(f"SEALS_LEASE_SECONDS={value!r}")):
        lease_seconds()


def test_unlock_breaks_a_stuck_lease_and_its_holder_commits_nothing(tmp_path, capsys):
    """The documented way out of a lease that will not expire soon: ``seals-al unlock``. A stage
    still holding it finds it gone before it commits."""
    storage = LocalStorage(tmp_path)
    assert main(["unlock", str(tmp_path)]) == 0
    assert "no lease is held" in capsys.readouterr().out
    with Lease(storage, seconds=600) as lease:
        assert main(["unlock", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert f"broke the lease of pid {os.getpid()} on " in out
        assert not storage.exists("LOCK")
        taken = re.escape("or it was broken (seals-al unlock); nothing was committed")
        with Lease(storage, seconds=600), pytest.raises(SealsError, match=taken):  # taken at once
            lease.check()


def drive(args: list[str], answers: list[str], cache_dir: Path) -> str:
    """Run a command on a pseudo-terminal, answering each prompt in turn; return what it showed."""
    controller, terminal = os.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEALS_CACHE_DIR": str(cache_dir), "COLUMNS": "100"}
    process = subprocess.Popen([EXE, *args], stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    shown, pending = b"", list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
            if pending and re.sub(rb"\x1b\[[0-9;]*m", b"", shown).rstrip().endswith(b"q=quit:"):
                os.write(controller, (pending.pop(0) + "\n").encode())
        elif process.poll() is not None:
            break
    process.wait(timeout=10)
    os.close(controller)
    return shown.decode(errors="replace")


def test_terminal_labeler_records_answers_and_resumes(campaign, cache_dir):
    campaign.round()
    batch = open_batch(campaign)
    uri = str(campaign.storage.uri)
    shown = drive(["label", uri], ["y", "n", "u", "y", "s", "q"], cache_dir)
    assert batch[0]["text"][:30] in shown
    assert "1 of 10" in shown
    answers = [json.loads(x) for x in campaign.storage.read_text("inbox/000/terminal.jsonl").splitlines()]
    assert answers == [{"id": batch[0]["id"], "label": 1}, {"id": batch[1]["id"], "label": 1}]
    shown = drive(["label", uri], ["n", "q"], cache_dir)
    assert "1 of 8" in shown, "a new session starts at the first unanswered example"
    answers = [json.loads(x) for x in campaign.storage.read_text("inbox/000/terminal.jsonl").splitlines()]
    assert answers[-1] == {"id": batch[2]["id"], "label": 0}
    assert len(answers) == 3
    assert main(["round", uri]) == 0
    assert len(campaign.state().labeled) == 103


@pytest.mark.hostile
def test_terminal_labeler_answers_after_a_round_committed_under_it_are_not_lost(campaign):
    """Answer two, another shell runs a round (it takes those two), answer three more, then the
    input ends: the three later answers reach the next round."""
    from rich.console import Console

    from seals_al.labeltools.terminal import run_labeler

    campaign.round()
    script = iter(["y", "n", "round", "y", "n", "y"])

    def ask(prompt: str) -> str:
        answer = next(script, None)
        if answer is None:
            raise EOFError  # end of input quits like q
        if answer == "round":
            assert campaign.round()["labeled"] == 102
            answer = next(script)
        return answer

    with open(os.devnull, "w") as quiet:
        counts = run_labeler(campaign, Console(file=quiet), ask)
    assert counts["answered"] == 5
    assert campaign.round()["labeled"] == 105, "the three answers given after the commit are taken in"


@pytest.mark.hostile
def test_label_files_over_the_size_limit_are_refused(campaign, monkeypatch):
    from seals_al.labelformats import files as label_files

    campaign.round()
    monkeypatch.setattr(label_files, "MAX_LABEL_FILE_BYTES", 64)
    ids = [r["id"] for r in open_batch(campaign)]
    campaign.storage.write_text("inbox/000/big.csv", "id,label\n" + "".join(f"{i},1\n" for i in ids))
    returned: dict[str, int] = {}  # key -> bytes handed back by storage
    read_bytes = campaign.storage.read_bytes

    def spy(key: str, *args) -> bytes:
        data = read_bytes(key, *args)
        returned[key] = len(data)
        return data

    monkeypatch.setattr(campaign.storage, "read_bytes", spy)
    with pytest.raises(
        SealsError, match=r"big\.csv: rejected, nothing ingested: file: \d+ bytes, over the limit of 64"
    ):
        campaign.round()
    assert campaign.state().round == 0
    assert campaign.status()["new_label_files"] == 1
    assert [k for k in campaign.storage.list("reports") if "big.csv" in k], "the rejection is reported"
    assert "inbox/000/big.csv" not in returned, "an oversized file is rejected by its size, never read"


def test_the_shipped_example_initializes(tmp_path):
    config = CampaignConfig.from_yaml(
        Path(__file__).resolve().parents[1] / "examples/report_fraud/campaign.yaml"
    )
    assert config.concept == CONCEPT
    assert Path(config.dataset.data).is_file()
    storage = init(config, str(tmp_path / "c"))
    seeds = storage.read_text("seed/seeds.csv").splitlines()[1:]
    assert sum(line.endswith(",1") for line in seeds) == 5
    assert len(seeds) == 100


def test_a_spent_budget_publishes_no_more_work(tmp_path, clinc_slice, cache_dir):
    truth = truth_of(clinc_slice)
    init(
        CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, budget=110)),
        str(tmp_path / "c"),
    )
    c = Campaign(str(tmp_path / "c"), progress=False)
    c.round()
    c.storage.write_text(
        "inbox/000/l.csv", "id,label\n" + "".join(f"{r['id']},{truth[r['id']]}\n" for r in open_batch(c))
    )
    assert c.round()["batch"] == 0
    status = c.status()
    assert status["labeled"] == 110
    assert status["waiting_for"] == "budget spent: nothing more to label"
    assert c.round() is None


def test_each_rounds_model_json_reproduces_its_predictions(campaign):
    from seals_al.train import LinearModel, fit_logistic

    campaign.round()
    saved = LinearModel.from_json(campaign.storage.read_json("rounds/000/model.json"))
    state = campaign.state()
    ids = sorted(state.labeled)
    store = campaign.dataset().store
    x = store.vectors(store.row_ids_of(ids))
    labels = np.asarray([state.labeled[i]["label"] for i in ids])
    refit = fit_logistic(x, labels, seed=campaign.config.learning.seed)
    np.testing.assert_allclose(saved.coef, refit.coef, rtol=1e-6)
    np.testing.assert_allclose(saved.predict_proba(x), refit.predict_proba(x), rtol=1e-6)


def test_the_stage_commands_equal_a_whole_round(tmp_path, clinc_slice, cache_dir, capsys):
    """`seals-al ingest`, `train`, `select` (what the Argo template runs) commit the same round as
    `seals-al round`; `report` writes the UI files; `wait` and a stage run out of order fail clearly."""
    reference = prepared(tmp_path, str(tmp_path / "c"), "reference", clinc_slice, cache_dir)
    reference.round()
    c = prepared(tmp_path, str(tmp_path / "c"), "staged", clinc_slice, cache_dir)
    uri = str(c.storage.uri)
    assert main(["train", uri]) == 2
    assert "no labels ingested for round 1; run label ingest before train" in capsys.readouterr().err
    assert main(["wait", uri, "--poll-seconds", "0.05", "--timeout-seconds", "5"]) == 0
    for stage in ("ingest", "train"):
        assert main([stage, uri]) == 0
    assert c.state().round == 0, "nothing is committed before select"
    assert c.status()["interrupted_round"] == "001"
    # select in a fresh process, as its pod runs it: it applies the saved model and imports neither
    # SciPy nor scikit-learn to do so.
    assert not modules_loaded_by(["select", uri]) & {"scipy", "sklearn", "matplotlib"}
    assert round_outcome(c, 1) == round_outcome(reference, 1)
    assert main(["report", uri, "--out", str(tmp_path / "report")]) == 0
    report = tmp_path / "report"
    assert json.loads((report / "keep_going").read_text()) is True
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["labeled"] == 110
    assert metrics["round"] == 1
    assert "<svg " in (report / "report.html").read_text()
    assert "| labeled | 110 |" in (report / "summary.md").read_text()
    capsys.readouterr()
    assert main(["wait", uri, "--poll-seconds", "0.05", "--timeout-seconds", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "inbox/001/: no new labels after 0.2 s; the campaign is unchanged at round 1" in err
    assert main(["ingest", uri]) == 0
    assert "no new labels: nothing to do" in capsys.readouterr().out
    assert c.state().round == 1


@pytest.mark.hostile
def test_select_refuses_a_model_trained_on_other_labels(tmp_path, clinc_slice, cache_dir):
    c = prepared(tmp_path, str(tmp_path / "c"), "stale", clinc_slice, cache_dir)
    c.storage.delete("inbox/000/l.csv")
    batch = open_batch(c)
    truth = truth_of(clinc_slice)
    c.storage.write_text("inbox/000/a.csv", "id,label\n" + f"{batch[0]['id']},{truth[batch[0]['id']]}\n")
    assert c.ingest().labeled == 101
    c.train()
    c.storage.write_text("inbox/000/b.csv", "id,label\n" + f"{batch[1]['id']},{truth[batch[1]['id']]}\n")
    assert c.ingest().labeled == 102, "the staged round is recomputed with the new file"
    with pytest.raises(SealsError, match="labels were ingested again after the model was trained"):
        c.select()
    c.train()
    assert c.select()["labeled"] == 102


def test_an_existing_campaign_is_reused_only_with_the_same_settings(tmp_path, clinc_slice, cache_dir):
    config = CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir))
    uri = str(tmp_path / "campaign")
    assert ensure_campaign(config, uri) is True
    assert ensure_campaign(config, uri) is False, "a re-run with the same settings is a no-op"
    other = replace(config, learning=replace(config.learning, k=20), budget=300)
    with pytest.raises(SealsError, match=r"other settings exists here \(budget: 200 there, 300 given; k: 10"):
        ensure_campaign(other, uri)


def test_a_campaign_written_before_newer_settings_existed_still_opens(tmp_path, clinc_slice, cache_dir):
    """campaign.json from before C, knn_graph and embeddings_column were settings: those take
    their defaults, the campaign opens and advances, and the same settings are still the same."""
    config = CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir))
    uri = str(tmp_path / "campaign")
    storage = init(config, uri)
    old = {
        k: v
        for k, v in storage.read_json("campaign.json").items()
        if k not in ("C", "knn_graph", "embeddings_column")
    }
    storage.write_json("campaign.json", old)
    campaign = Campaign(uri, progress=False)
    assert (campaign.config.learning.C, campaign.config.dataset.knn_graph) == (1.0, True)
    assert ensure_campaign(config, uri) is False
    assert campaign.round()["labeled"] == 100
    storage.write_json("campaign.json", {**old, "colour": "red"})
    with pytest.raises(SealsError, match=r"campaign.json: unknown setting\(s\) colour"):
        Campaign(uri, progress=False)


def test_next_step_stops_at_the_target_metric(tmp_path, clinc_slice, cache_dir):
    c = prepared(tmp_path, str(tmp_path / "c"), "target", clinc_slice, cache_dir)
    assert c.next_step() == (
        True,
        f"{BATCH} example(s) to label; drop labels in {c.storage.where('inbox/000')}/",
    )
    keep_going, reason = c.next_step("average_precision", 0.5)
    assert not keep_going
    assert reason.startswith("target reached: average_precision ")
    with pytest.raises(SealsError, match=r"target metric 'f1' is not in metrics\.json; known: "):
        c.next_step("f1", 0.5)


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("concept", "message"),
    [("report_fraud ", "has spaces around it"), ("no_such_intent", "is never in the truth column 'label'")],
)
def test_init_refuses_a_concept_the_truth_column_never_names(
    tmp_path, clinc_slice, cache_dir, concept, message
):
    config = CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir))
    with pytest.raises(SealsError, match=message):
        init(replace(config, concept=concept), str(tmp_path / "c"))
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"k": "U"}, r"k is \d+, but U has [\d,]+ examples, so each has at most [\d,]+ neighbours"),
        ({"index_factory": "IVF100000,Flat"}, r"asks for 100,000 IVF lists, but U has [\d,]+ examples"),
    ],
)
def test_init_refuses_settings_u_cannot_fill_before_anything_is_embedded(
    tmp_path, clinc_slice, cache_dir, extra, message
):
    """k over |U| - 1 or more IVF lists than U has rows made round 0 grow without bound; init
    refuses them, writes nothing, and embeds nothing."""
    with clinc_slice.open(newline="") as f:
        n_u = sum(r["split"] != "test" for r in csv.DictReader(f))
    if extra.get("k") == "U":
        extra = {"k": n_u}
    config = CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, **extra))
    before = sorted(cache_dir.rglob("*")) if cache_dir.exists() else []
    with pytest.raises(SealsError, match=message):
        init(config, str(tmp_path / "c"))
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    assert (sorted(cache_dir.rglob("*")) if cache_dir.exists() else []) == before
    if "k" in extra:  # one fewer is every other example of U: accepted
        config = CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, k=n_u - 1))
        init(config, str(tmp_path / "c"))


def test_raw_copies_of_label_files_never_collide_and_a_long_name_is_kept(campaign, clinc_slice):
    """``x/y.jsonl`` and ``x_y.jsonl`` once shared one raw copy (one person's file lost from the
    audit trail), and a long but legal name failed the round after part of its folder was written."""
    truth = truth_of(clinc_slice)
    campaign.round()
    batch = [row["id"] for row in open_batch(campaign)]
    long_name = "l" * 240 + ".csv"
    files = {
        "inbox/000/x/y.jsonl": batch[:3],
        "inbox/000/x_y.jsonl": batch[3:6],
        f"inbox/000/{long_name}": batch[6:],
    }
    for key, ids in files.items():
        if key.endswith(".csv"):
            text = "id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids)
        else:
            text = "".join(json.dumps({"id": i, "label": truth[i]}) + "\n" for i in ids)
        campaign.storage.write_text(key, text)
    assert campaign.round()["round"] == 1
    entries = {e["file"]: e for e in campaign.storage.read_json("rounds/001/ingested.json")}
    copies = [entries[key]["copy"] for key in files]
    assert len(set(copies)) == 3
    for key, copy in zip(files, copies, strict=True):
        assert campaign.storage.read_bytes(copy) == campaign.storage.read_bytes(key), key
    assert copies[2].endswith(f"/{long_name}"), "the file keeps its own name"
    # A rejected file with a long name: its report is written, and the error names the file.
    bad = f"inbox/001/{'b' * 250}.csv"
    campaign.storage.write_text(bad, "id,label\nno-such-id,1\n")
    with pytest.raises(SealsError, match=r"b{250}\.csv"):
        campaign.round()
    (report,) = [k for k in campaign.storage.list("reports") if "b" * 100 in k]
    assert campaign.storage.read_json(report)["file"] == bad


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--poll-seconds", "nan"], "--poll-seconds must be a positive number of seconds, got nan"),
        (["--timeout-seconds", "inf"], "--timeout-seconds must be 0 or more seconds, got inf"),
        (["--fraction", "nan"], "the fraction of the batch to wait for must be in (0, 1], got nan"),
    ],
)
def test_a_wait_with_a_time_that_is_not_finite_is_a_one_line_error(campaign, capsys, flags, message):
    campaign.round()
    assert main(["wait", campaign.storage.uri, *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.hostile
@pytest.mark.parametrize(
    "record",
    [
        "[]",
        "null",
        '{"project": "7", "tasks": {}}',
        '{"project": 7, "tasks": []}',
        '{"project": 7, "tasks": {"a": 5}}',
    ],
)
def test_a_corrupt_label_studio_record_is_an_error_naming_it(campaign, record):
    campaign.storage.write_text("labelstudio.json", record)
    from seals_al.labeltools.labelstudio.tasks import read_record

    with pytest.raises(SealsError, match=r"labelstudio.json: not a Label Studio record"):
        read_record(campaign.storage)


@pytest.mark.hostile
def test_a_corrupt_terminal_answers_file_is_an_error_naming_its_line(campaign):
    from rich.console import Console

    from seals_al.labeltools.terminal import run_labeler

    campaign.round()
    first = campaign.state().pending[0]["id"]
    campaign.storage.write_text(
        "inbox/000/terminal.jsonl", json.dumps({"id": first, "label": 1}) + "\n[1, 2]\n"
    )
    with pytest.raises(SealsError, match=r"terminal.jsonl: line 2: not a saved answer"):
        run_labeler(campaign, Console(file=io.StringIO()), ask=lambda prompt: "q")


@pytest.mark.hostile
def test_label_studio_tasks_of_odd_shapes_are_not_taken_for_the_campaigns(campaign):
    """meta as a string, a data mapping missing or not one, an item id that is not a string: such
    a task is not one this campaign pushed (it was a traceback); a recorded one is found by id."""
    from seals_al.labeltools.labelstudio.client import Connection
    from seals_al.labeltools.labelstudio.tool import LabelStudio

    sync = LabelStudio(campaign, Connection("http://127.0.0.1:9", "t"))
    record = {"project": 1, "tasks": {"a": {"task": 5, "round": 0}}}
    tasks = [
        {"id": 1, "data": {"seals_id": "b"}, "meta": "a string"},
        {"id": 2, "data": {"seals_id": 3}},
        {"id": 3, "data": "text"},
        {"id": 4},
        {"id": 5, "data": {"seals_id": "a"}, "meta": {"seals_campaign": "gs://elsewhere/c"}},
        {"id": 6, "data": {"seals_id": "c"}, "meta": {"seals_campaign": "gs://another/campaign"}},
    ]
    ours = sync._ours(tasks, record)
    assert {item: t["id"] for item, t in ours.items()} == {"b": 1, "a": 5}
    assert sync.moved_from == "gs://elsewhere/c"


@pytest.mark.hostile
def test_inbox_files_that_are_never_labels_are_named_by_status_and_do_not_stop_a_round(
    campaign, clinc_slice, tmp_path
):
    """A backslash in a name, a link leading outside the campaign (local disk) and a hidden file
    (listed by GCS) stopped status and every round with an error about an internal key, and a
    hidden file on a local disk was skipped without a word; they are ignored now, each named by
    status with why, and the labels beside them are ingested."""
    campaign.round()
    truth = truth_of(clinc_slice)
    rows = "".join(f"{row['id']},{truth[row['id']]}\n" for row in campaign.state().batch)
    campaign.storage.write_text("inbox/000/labels.csv", "id,label\n" + rows)
    expected = {}
    if campaign.storage.uri.startswith("gs://"):
        st = campaign.storage  # written as gsutil would: seals-al itself writes no such key
        bucket = st._client.bucket(st._bucket) if isinstance(st._bucket, str) else st._bucket
        bucket.blob(st.prefix + "inbox/000/x/.DS_Store").upload_from_string(b"junk")
        expected["inbox/000/x/.DS_Store"] = "a hidden file"
    else:
        root = Path(campaign.storage.uri)
        (root / "inbox/000/a\\b.csv").write_text("id,label\n")
        (tmp_path / "secret.csv").write_text("id,label\nnot-yours,1\n")
        (root / "inbox/000/link.csv").symlink_to(tmp_path / "secret.csv")
        expected["inbox/000/a\\\\b.csv"] = "not a plain file name"
        (root / "inbox/000/.labels-draft.csv").write_text("id,label\n")
        expected["inbox/000/.labels-draft.csv"] = "a hidden file"
        expected["inbox/000/link.csv"] = "a link that leads outside the campaign"
    ignored = campaign.status()["ignored_files"]
    assert len(ignored) == len(expected)
    for key, why in expected.items():
        assert any(line.startswith(f"'{key}': ignored ({why})") for line in ignored), ignored
    assert campaign.round()["round"] == 1
    assert campaign.state().ingested[-1]["file"] == "inbox/000/labels.csv"
