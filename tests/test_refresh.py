"""Refreshing a campaign's published data (seals_al.campaign.refresh): new items embedded by the
Beam pipeline and appended to the published store, the published index built again over the grown
U with its own settings, nothing done when nothing changed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from seals_al.campaign import Campaign, CampaignConfig, ensure_campaign
from seals_al.campaign.refresh import refresh_data
from seals_al.dataset import index_over_u
from seals_al.embed.pipeline import ensure_embeddings
from seals_al.errors import SealsError
from seals_al.oracle import seed_file_from_truth
from seals_al.settings import DataConfig

from .conftest import CLINC


def campaign_over(tmp_path: Path, data: DataConfig) -> Campaign:
    config = CampaignConfig("report_fraud", "", data)
    ensure_campaign(config, str(tmp_path / "campaign"), lambda: seed_file_from_truth(config))
    return Campaign(str(tmp_path / "campaign"), progress=False)


def test_new_items_are_appended_to_the_published_store_and_the_index_built_again(
    tmp_path, clinc_slice, monkeypatch
):
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "0.csv").write_bytes(clinc_slice.read_bytes())
    store, index = str(tmp_path / "store"), str(tmp_path / "index")
    ensure_embeddings(str(folder), store)
    index_over_u(str(folder), store, index, "IVF4,Flat", split_column="split", search_params={"nprobe": 2})
    data = DataConfig(str(folder), embeddings=store, index=index, truth_column="label", split_column="split")
    campaign = campaign_over(tmp_path, data)

    done = refresh_data(campaign)
    assert (done.embedded, done.index_rebuilt) == (0, False)
    assert done.lines() == ["data up to date: 750 rows embedded"]

    with CLINC.open(newline="") as f:
        known = {row["id"] for row in csv.DictReader(clinc_slice.open(newline=""))}
        new = [row for row in csv.DictReader(f) if row["id"] not in known][:12]
    with (folder / "1.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(new[0]))
        writer.writeheader()
        writer.writerows(new)
    done = refresh_data(campaign)
    assert (done.embedded, done.appended, done.store_rows, done.index_rebuilt) == (12, True, 762, True)
    built = json.loads((Path(index) / "manifest.json").read_text())
    assert built["ntotal"] == done.index_rows == 600 + sum(row["split"] != "test" for row in new)
    assert (built["source"]["factory"], built["source"]["search_params"]) == ("IVF4,Flat", {"nprobe": 2})
    assert campaign.round()["round"] == 0, "a round runs over the refreshed data"
    assert refresh_data(campaign).embedded == 0, "and a second refresh finds it up to date"


def test_a_campaign_without_published_embeddings_is_prepared_by_its_round(tmp_path, clinc_slice):
    campaign = campaign_over(tmp_path, DataConfig(str(clinc_slice), truth_column="label"))
    assert refresh_data(campaign).lines() == [
        "no published embeddings: each round prepares the data on its machine"
    ]


def test_embeddings_in_a_file_are_not_refreshed_and_say_so(tmp_path, clinc_slice):
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.ones((750, 4), np.float32))
    campaign = campaign_over(
        tmp_path, DataConfig(str(clinc_slice), embeddings=str(vectors), truth_column="label")
    )
    with pytest.raises(SealsError, match=r"vectors.npy: precomputed embeddings in a file are not refreshed"):
        refresh_data(campaign)
