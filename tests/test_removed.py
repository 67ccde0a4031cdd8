"""Items that leave: a tombstone list (the ``removed`` setting) of ids removed for retention or
privacy. Tombstoned items leave the pool and every later batch at once, the pool is then the one
built from scratch without them, their labels stay in the history, and whether they still train is
the ``train_on_removed`` setting. The round record counts what changed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.errors import SealsError
from seals_al.items import read_removed

from .test_campaign import open_batch, truth_of, write_config
from .test_growth import brute_force_pool


def test_a_tombstone_list_is_one_id_per_line_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "removed.txt"
    path.write_bytes("\ufeffa\n# removed for privacy, 2026-12-01\n\n  b  \r\nc".encode())
    assert read_removed(str(path)) == {"a", "b", "c"}


def test_a_tombstone_list_that_is_not_text_or_not_there_is_an_error_naming_it(tmp_path):
    path = tmp_path / "removed.txt"
    path.write_bytes(b"a\nb\xff\n")
    with pytest.raises(SealsError, match=r"removed.txt: line 2: not UTF-8 text"):
        read_removed(str(path))
    with pytest.raises(SealsError, match=r"missing.txt"):
        read_removed(str(tmp_path / "missing.txt"))


def label(campaign: Campaign, r: int, ids: list[str], truth: dict[str, int], name: str = "l") -> None:
    rows = "".join(json.dumps({"id": i, "label": truth[i]}) + "\n" for i in ids)
    campaign.storage.write_text(f"inbox/{r:03d}/{name}.jsonl", rows)


def read(uri: str, key: str) -> dict:
    return json.loads((Path(uri) / key).read_text())


@pytest.mark.parametrize("train_on_removed", [False, True])
def test_tombstoned_items_leave_the_pool_and_the_batch_and_their_labels_stay_in_the_history(
    tmp_path, clinc_slice, cache_dir, train_on_removed
):
    truth = truth_of(clinc_slice)
    items = tmp_path / "items.csv"
    items.write_bytes(clinc_slice.read_bytes())
    removed = tmp_path / "removed.txt"
    removed.write_text("# ids removed for retention or privacy\n")
    config = write_config(
        tmp_path,
        items,
        cache_dir,
        index_factory="Flat",
        removed="removed.txt",
        train_on_removed=train_on_removed,
    )
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(config), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    batch = [row["id"] for row in open_batch(campaign)]
    dataset = campaign.dataset()
    with np.load(Path(uri) / "rounds/000/pool/pool.npz") as saved:
        members = dataset.external_ids(saved["ids"])
    seed = sorted(i for i, row in campaign.state().labeled.items() if row["label"] == 1)[0]
    in_pool = next(i for i in members if i not in batch)
    tombstoned = [batch[0], seed, in_pool]
    removed.write_text("\n".join([*tombstoned, "gone-long-ago"]) + "\n")
    label(campaign, 0, batch[1:], truth)  # the tombstoned one in the batch is never answered

    campaign = Campaign(uri, progress=False)
    record = campaign.round()
    dataset = campaign.dataset()
    rows = [json.loads(line) for line in (Path(uri) / "rounds/001/to_label.jsonl").read_text().splitlines()]
    assert not {row["id"] for row in rows} & set(tombstoned), "out of every later batch"
    assert not {row["reached_from"] for row in rows} & set(tombstoned)
    with np.load(Path(uri) / "rounds/001/pool/pool.npz") as saved:
        pool = set(dataset.external_ids(saved["ids"]))
        expanded = set(dataset.external_ids(saved["expanded"]))
    assert not pool & set(tombstoned)
    assert not expanded & set(tombstoned)
    # The pool built from scratch: every labeled and selected example but the tombstoned expanded,
    # the tombstoned never members (their places in the lists are not refilled).
    state = campaign.state()
    examples = sorted((set(state.labeled) | {row["id"] for row in state.batch}) - set(tombstoned))
    sure, tied = brute_force_pool(dataset, examples, campaign.config.learning.k)
    assert sure - set(tombstoned) <= pool <= sure | tied
    # The labels stay in the history; training follows the setting.
    assert seed in state.labeled
    evaluation = read(uri, "rounds/001/evaluation.json")
    assert evaluation["labeled"] == len(state.labeled) - (0 if train_on_removed else 1)
    # What changed is recorded from the first round whose data differs, and only then.
    assert "items_removed" not in read(uri, "rounds/000/metrics.json")
    assert (record["items_added"], record["items_removed"], record["index_rows"]) == (
        0,
        3,
        dataset.u_count,
    )
    assert read(uri, "rounds/001/data.json")["removed"] == 3
    assert campaign.status()["data_version"].endswith(
        f"round 1: 750 items, {dataset.u_count} in U, 3 tombstoned"
    )

    # A late label for the tombstoned item is kept in the history; an item gone from the data is
    # no error once tombstoned (and never trains).
    label(campaign, 1, [batch[0]], truth, name="late")
    label(campaign, 1, [row["id"] for row in open_batch(campaign)], truth)
    lines = items.read_text().splitlines(keepends=True)
    items.write_text("".join(line for line in lines if not line.startswith(f"{seed},")))
    campaign = Campaign(uri, progress=False)
    record = campaign.round()
    state = campaign.state()
    assert batch[0] in state.labeled
    assert seed in state.labeled
    evaluation = read(uri, "rounds/002/evaluation.json")
    assert evaluation["labeled"] == len(state.labeled) - (1 if train_on_removed else 2)
    # One item left the data, but it was tombstoned already: nothing more left the selectable set.
    assert (record["items_added"], record["items_removed"]) == (0, 0)
    assert record["index_rows"] == campaign.dataset().u_count == dataset.u_count - 1
    assert read(uri, "rounds/002/data.json")["removed"] == 2


def test_scoring_leaves_tombstoned_items_out(tmp_path, clinc_slice, cache_dir):
    from seals_al.score.corpus import read_scores, score_campaign

    removed = tmp_path / "removed.txt"
    with clinc_slice.open(newline="") as f:
        gone = [row["id"] for row in csv.DictReader(f)][:2]
    removed.write_text("\n".join(gone))
    config = write_config(tmp_path, clinc_slice, cache_dir, removed=str(removed))
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(config), uri)
    campaign = Campaign(uri, progress=False)
    campaign.round()
    summary = score_campaign(campaign, str(tmp_path / "scores.parquet"))
    scores = read_scores(str(tmp_path / "scores.parquet"))
    assert summary.scored == 748
    assert not set(scores["id"]) & set(gone)
