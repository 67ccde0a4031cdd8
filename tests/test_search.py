"""Start from words (seals_al.search, `seals-al search`): the items nearest to a text in the
campaign's own index and model (the real MiniLM), shown and written as a file to label."""

from __future__ import annotations

import csv
import io

import pytest

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.cli import main
from seals_al.errors import SealsError
from seals_al.search import nearest

from .test_campaign import CONCEPT, truth_of, write_config


@pytest.fixture
def campaign(tmp_path, clinc_slice, cache_dir) -> Campaign:
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir)), uri)
    return Campaign(uri, progress=False)


def test_the_concepts_words_find_its_items(campaign, clinc_slice):
    truth = truth_of(clinc_slice)
    found = nearest(campaign, ["report fraud", "someone used my card without permission"], k=20)
    assert len(found) == 20
    assert len({row["id"] for row in found}) == 20, "each item once"
    sims = [row["similarity"] for row in found]
    assert sims == sorted(sims, reverse=True)
    positives = sum(truth[row["id"]] for row in found)
    in_u = sum(1 for row in found if row["id"] in truth)
    assert in_u == 20, "items of U only (the evaluation split is not in the index)"
    assert positives >= 10, f"{positives} of the 20 nearest are {CONCEPT}"
    seeds = campaign.state().labeled  # none before round 0 is ingested
    assert all(row["labeled"] is None and not row["in_batch"] for row in found), seeds


def test_search_writes_a_file_to_label_that_the_inbox_takes(campaign, clinc_slice, tmp_path, capsys):
    truth = truth_of(clinc_slice)
    campaign.round()
    out = tmp_path / "found.csv"
    uri = campaign.storage.uri
    assert main(["search", uri, "report fraud", "--k", "15", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "15 item(s) to label" in shown
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["id", "label", "similarity", "text"]
    state = campaign.state()
    for row in rows:  # a person answers every row not labeled yet
        assert row["label"] == (
            "" if row["id"] not in state.labeled else str(state.labeled[row["id"]]["label"])
        )
        row["label"] = row["label"] or str(truth[row["id"]])
    answered = "id,label\n" + "".join(f"{r['id']},{r['label']}\n" for r in rows)
    campaign.storage.write_text("inbox/000/found.csv", answered)
    campaign.round()
    labeled = campaign.state().labeled
    assert {r["id"] for r in rows} <= set(labeled), "every answered item is labeled"
    outside = [r["id"] for r in rows if r["id"] not in state.batch_ids and r["id"] not in state.labeled]
    assert outside, "the search found items outside the batch"
    assert all(labeled[i].get("outside_batch") is True for i in outside)


@pytest.mark.hostile
def test_a_bad_query_or_output_is_refused(campaign, capsys):
    uri = campaign.storage.uri
    with pytest.raises(SealsError, match="a query needs at least one non-empty text"):
        nearest(campaign, ["  "])
    with pytest.raises(SealsError, match="--k must be a positive number"):
        nearest(campaign, ["x"], k=0)
    assert main(["search", uri, "fraud", "--out", f"{uri}/inbox/000/found.csv"]) == 2
    assert "inside the campaign" in capsys.readouterr().err
    assert main(["search", uri, "fraud", "--out", "found.txt"]) == 2
    assert "write the items found as .csv" in capsys.readouterr().err
