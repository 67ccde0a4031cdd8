"""The round engine on its own: SEALS and global over the same data, and what a round records."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.dataset import Dataset
from seals_al.items import draw_seeds
from seals_al.labeltools.oracle import label_open_batch, seed_file_from_truth
from seals_al.record import RoundRecord
from seals_al.round import GlobalCandidates, RoundEngine, SealsCandidates
from seals_al.settings import RoundConfig
from seals_al.simulate import SimulationConfig, simulate

U = 480  # rows outside the test split


def selected(dataset: Dataset, **learning) -> list[list[int]]:
    sim = SimulationConfig(
        concept="c0", learning=RoundConfig(**learning), seed_positives=3, seed_negatives=20, rounds=3
    )
    return simulate_picks(dataset, sim)


def simulate_picks(dataset: Dataset, sim: SimulationConfig) -> list[list[int]]:
    """The rows each round picked, read back through the engine's own records and candidates."""
    engine = RoundEngine(dataset, sim.learning, sim.concept, progress=False)
    seeds = draw_seeds(
        dataset.items(), sim.concept, sim.seed_positives, sim.seed_negatives, sim.learning.seed
    )
    labeled = dataset.store.row_ids_of([i for i, _ in seeds]).tolist()
    y = [label for _, label in seeds]
    candidates = engine.candidates()
    candidates.exclude(np.asarray(labeled))
    picks = []
    for r in range(sim.rounds):
        model = engine.train(np.asarray(labeled), np.asarray(y))
        outcome = engine.select(candidates, model, sim.learning.batch_size, r)
        rows = [p.row_id for p in outcome.selection.picks]
        picks.append(rows)
        labeled += rows
        y += dataset.truth(sim.concept, np.asarray(rows)).tolist()
    return picks


@pytest.mark.parametrize("strategy", ["maxent", "id", "mlp", "random"])
def test_with_k_covering_u_seals_selects_what_global_selects(synthetic_items, strategy):
    """With k >= |U| - 1 every example of U is a neighbour of every labeled one, so the pool is
    U minus L and SEALS must pick exactly the global batches, ties and all."""
    dataset = Dataset.prepare(synthetic_items, progress=False)
    assert len(dataset.u_rows) == U
    seals = selected(dataset, strategy=strategy, mode="seals", k=U - 1, batch_size=15)
    glob = selected(dataset, strategy=strategy, mode="global", k=U - 1, batch_size=15)
    assert seals == glob
    assert len({r for batch in seals for r in batch}) == 45


def test_a_small_k_pool_differs_from_global_and_stays_a_fraction_of_u(synthetic_items):
    dataset = Dataset.prepare(synthetic_items, progress=False)
    sim = SimulationConfig(
        concept="c0", learning=RoundConfig(k=5, batch_size=10), seed_positives=3, seed_negatives=20, rounds=3
    )
    rounds = simulate(dataset, sim, progress=False)["rounds"]
    assert all(0 < r["pool_size"] < U - r["labeled"] for r in rounds)
    glob = simulate(dataset, replace(sim, learning=replace(sim.learning, mode="global")), progress=False)[
        "rounds"
    ]
    assert [r["pool_size"] for r in glob] == [U - r["labeled"] for r in glob]


def test_a_round_records_its_cost(synthetic_items):
    dataset = Dataset.prepare(synthetic_items, progress=False)
    sim = SimulationConfig(
        concept="c0", learning=RoundConfig(k=8, batch_size=10), seed_positives=3, seed_negatives=20, rounds=2
    )
    rounds = simulate(dataset, sim, progress=False)["rounds"]
    # kNN look-ups: each seed once (round 0), then each pick once; the last round selects nothing.
    assert [r["knn_queries"] for r in rounds] == [23 + 10, 10, 0]
    assert [r["selected"] for r in rounds] == [10, 10, 0]
    positives = int(dataset.truth("c0", dataset.u_rows).sum())
    for r in rounds:
        assert r["pool_fraction"] == pytest.approx(r["pool_size"] / U)
        assert r["positives_total"] == positives
        assert r["recall"] == pytest.approx(r["positives"] / positives)
        assert 0 < r["average_precision"] <= 1


def test_global_candidates_leave_out_what_was_taken(synthetic_items):
    dataset = Dataset.prepare(synthetic_items, progress=False)
    engine = RoundEngine(dataset, RoundConfig(mode="global"), "c0", progress=False)
    candidates = engine.candidates()
    assert isinstance(candidates, GlobalCandidates)
    assert len(candidates) == U
    truth = dataset.truth("c0", dataset.u_rows)
    taken = np.concatenate([dataset.u_rows[truth == 1][:5], dataset.u_rows[truth == 0][:25]])
    candidates.exclude(taken)
    assert len(candidates) == U - 30
    outcome = engine.select(candidates, engine.train(taken, dataset.truth("c0", taken)), 7, r=0)
    picked = {p.row_id for p in outcome.selection.picks}
    assert not picked & set(taken.tolist())
    assert (outcome.pool_size, len(candidates)) == (U - 30, U - 37), "picks leave the candidates"
    assert isinstance(RoundEngine(dataset, RoundConfig(), "c0").candidates(), SealsCandidates)


def test_an_empty_pool_is_a_reason_to_stop_not_a_crash(synthetic_items):
    dataset = Dataset.prepare(synthetic_items, progress=False)
    engine = RoundEngine(dataset, RoundConfig(mode="global"), "c0", progress=False)
    candidates = engine.candidates()
    candidates.exclude(dataset.u_rows)
    y = dataset.truth("c0", dataset.u_rows)
    outcome = engine.select(candidates, engine.train(dataset.u_rows, y), 5, r=4)
    assert outcome.selection.picks == []
    assert outcome.stopped == "nothing left to select: every example of U is labeled"
    record = engine.record(4, engine.evaluate(engine.train(dataset.u_rows, y), y), outcome, batch=0)
    assert record.to_json()["stopped"] == outcome.stopped


def test_simulation_and_campaign_write_the_same_record(tmp_path, synthetic_items):
    """summary.json's rounds and a campaign's metrics.json are one schema, RoundRecord."""
    dataset = Dataset.prepare(synthetic_items, progress=False)
    sim = SimulationConfig(concept="c0", learning=RoundConfig(k=8, batch_size=10), rounds=1)
    summary = simulate(dataset, sim, progress=False)
    config = CampaignConfig("c0", "", synthetic_items, RoundConfig(k=8, batch_size=10))
    init(config, str(tmp_path / "c"), seed_file_from_truth(config))
    campaign = Campaign(str(tmp_path / "c"), progress=False)
    first = campaign.round()
    label_open_batch(campaign)
    second = campaign.round()
    schema = {f.name for f in fields(RoundRecord)}
    for record in (*summary["rounds"], first, second):
        assert set(record) <= schema
        assert RoundRecord.from_json(record).to_json() == record
    # The campaign drew the same seeds and made the same first selection as the simulation.
    assert {k: first[k] for k in ("labeled", "positives", "pool_size", "selected", "knn_queries")} == {
        k: summary["rounds"][0][k] for k in ("labeled", "positives", "pool_size", "selected", "knn_queries")
    }
