"""Refreshing a campaign's published data (seals_al.campaign.refresh): new items embedded by the
Beam pipeline and appended to the published store, the published index built again over the grown
U with its own settings, nothing done when nothing changed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from seals_al.campaign import Campaign, CampaignConfig, ensure_campaign
from seals_al.campaign.refresh import refresh_data
from seals_al.dataset import index_over_u
from seals_al.embed.pipeline import ensure_embeddings
from seals_al.errors import SealsError
from seals_al.labeltools.oracle import label_open_batch, seed_file_from_truth
from seals_al.published import read_file
from seals_al.settings import DataConfig
from seals_al.storage import open_storage

from .conftest import CLINC, storage_root


def campaign_over(tmp_path: Path, data: DataConfig) -> Campaign:
    config = CampaignConfig("report_fraud", "", data)
    ensure_campaign(config, str(tmp_path / "campaign"), lambda: seed_file_from_truth(config))
    return Campaign(str(tmp_path / "campaign"), progress=False)


@pytest.mark.parametrize(
    ("where", "factory"), [("local", "IVF4,Flat"), ("gcs", "IVF4,Flat"), ("gcs", "Flat")]
)
def test_new_items_are_appended_to_the_published_store_and_index_and_the_graph_grown(
    tmp_path, clinc_slice, request, where, factory
):
    """The store gains only the new items' rows, the index gets them added (an IVF quantizer as
    trained), and the graph of the first round (published beside a gs:// index, else in the
    cache) is grown, not built again: extended through the index (IVF), or by the exact pass
    (Flat)."""
    root = storage_root(where, request, tmp_path)
    folder, store, index = f"{root}/items", f"{root}/store", f"{root}/index"
    open_storage(folder).write_bytes("0.csv", clinc_slice.read_bytes())
    ensure_embeddings(folder, store)
    params = {"nprobe": 2} if factory.startswith("IVF") else {}
    index_over_u(folder, store, index, factory, split_column="split", search_params=params)
    data = DataConfig(folder, embeddings=store, index=index, truth_column="label", split_column="split")
    campaign = campaign_over(tmp_path, data)

    done = refresh_data(campaign)
    assert (done.embedded, done.index_updated) == (0, False)
    assert done.lines() == ["data up to date: 750 rows embedded"]
    campaign.round()
    label_open_batch(campaign)

    with CLINC.open(newline="") as f:
        known = {row["id"] for row in csv.DictReader(clinc_slice.open(newline=""))}
        new = [row for row in csv.DictReader(f) if row["id"] not in known][:12]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(new[0]))
    writer.writeheader()
    writer.writerows(new)
    open_storage(folder).write_text("1.csv", out.getvalue())
    done = refresh_data(campaign)
    assert (done.embedded, done.appended, done.store_rows, done.index_extended) == (12, True, 762, True)
    built = json.loads(read_file(index, "manifest.json"))
    assert built["ntotal"] == done.index_rows == 600 + sum(row["split"] != "test" for row in new)
    assert built["grown_from"]["ntotal"] == 600, "the rows added to the index, not built again"
    assert (built["source"]["factory"], built["source"]["search_params"]) == (factory, params)
    campaign = Campaign(campaign.storage.uri, progress=False)
    assert campaign.round()["round"] == 1, "a round runs over the refreshed data"
    graph = campaign.dataset().neighbours(campaign.config.learning.k)
    # The graph (published beside a gs:// index, else in the cache) is grown from the last one's.
    assert graph.manifest["grown_rows"] == built["ntotal"] - 600
    assert ("updated_rows" in graph.manifest) == (factory != "Flat"), "Flat: the exact pass"
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


def test_the_refresh_command_says_what_it_did_and_names_what_it_cannot_refresh(tmp_path, clinc_slice, capsys):
    from seals_al.cli import main

    campaign = campaign_over(tmp_path, DataConfig(str(clinc_slice), truth_column="label"))
    assert main(["refresh", campaign.storage.uri]) == 0
    assert "no published embeddings" in capsys.readouterr().out
    assert main(["refresh", campaign.storage.uri, "--no_such_option=1"]) == 2
    assert "unknown option(s): --no_such_option" in capsys.readouterr().err
    vectors = tmp_path / "v.npy"
    np.save(vectors, np.ones((750, 4), np.float32))
    other = campaign_over(
        tmp_path / "b", DataConfig(str(clinc_slice), embeddings=str(vectors), truth_column="label")
    )
    assert main(["refresh", other.storage.uri]) == 2
    assert "v.npy: precomputed embeddings in a file are not refreshed" in capsys.readouterr().err
