"""Reports on their own: the live table, the run plots, and a campaign round as the UI shows it."""

from __future__ import annotations

import html
import json
import re

import pytest
from rich.console import Console

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.errors import SealsError
from seals_al.labeltools.oracle import label_open_batch, seed_file_from_truth
from seals_al.record import TABLE_COLUMNS, UI_METRICS, RoundRecord, table_cells
from seals_al.report import _ticks, add_round_row, history_svg, plot_runs, round_report, round_table
from seals_al.settings import RoundConfig

from .conftest import modules_loaded_by

PNG = b"\x89PNG\r\n\x1a\n"


def test_table_cells_format_known_values_and_dash_the_rest():
    record = RoundRecord(round=2, labeled=1200, positives=31, pool_size=4567, pool_fraction=0.0456).to_json()
    cells = dict(zip((key for key, _, _ in TABLE_COLUMNS), table_cells(record), strict=True))
    assert cells == {
        "round": "2",
        "labeled": "1,200",
        "positives": "31",
        "recall": "-",
        "average_precision": "-",
        "pool_size": "4,567",
        "pool_fraction": "4.6%",
        "scored": "0",
        "selection_seconds": "-",
    }
    table = round_table("t")
    add_round_row(table, record)
    console = Console(width=200, record=True)
    console.print(table)
    assert "4.6%" in console.export_text()


def test_plot_runs_writes_a_png_with_one_line_per_run(tmp_path):
    def summary(mode: str, ap: float) -> dict:
        rounds = [
            RoundRecord(
                r, 100 + 10 * r, 5 + r, recall=0.1 * r, average_precision=ap, pool_fraction=0.01 * r
            ).to_json()
            for r in range(3)
        ]
        return {"config": {"concept": "c0", "strategy": "maxent", "mode": mode}, "rounds": rounds}

    path = plot_runs(
        [summary("seals", 0.8), summary("global", 0.7)], tmp_path / "p" / "plot.png", reference={"full": 0.9}
    )
    assert path.read_bytes()[:8] == PNG


@pytest.mark.hostile
def test_a_plot_goes_only_to_a_png_path_that_holds_no_other_file(tmp_path):
    """`seals-al compare --out` replaces an earlier plot and refuses anything else, before work."""
    summary = {"config": {"concept": "c0", "strategy": "maxent", "mode": "seals"}, "rounds": []}
    notes = tmp_path / "notes.png"
    notes.write_text("not a plot")
    for out, message in (
        (tmp_path / "plot.txt", "a plot is written as PNG; give a path ending in .png"),
        (notes, "exists and is not a PNG; it would be replaced, so choose another --out"),
        (tmp_path, "a plot is written as PNG; give a path ending in .png"),
    ):
        with pytest.raises(SealsError, match=re.escape(f"{out}: {message}")):
            plot_runs([summary], out)
    assert notes.read_text() == "not a plot"
    plot_runs([summary], tmp_path / "p.png")
    plot_runs([summary], tmp_path / "p.png")  # an earlier plot: replaced
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG


@pytest.fixture
def campaign(tmp_path, synthetic_items) -> Campaign:
    config = CampaignConfig("c0", "", synthetic_items, RoundConfig(k=8, batch_size=10), budget=120)
    init(config, str(tmp_path / "c"), seed_file_from_truth(config))
    return Campaign(str(tmp_path / "c"), progress=False)


def test_a_round_report_for_the_ui(campaign):
    with pytest.raises(SealsError, match="no committed round to report on"):
        round_report(campaign)
    campaign.round()
    label_open_batch(campaign)
    campaign.round()
    report = round_report(campaign, batch_rows=3)
    assert report.round == 1
    assert set(report.metrics) <= set(UI_METRICS)
    assert report.metrics["labeled"] == 110
    assert report.metrics["batch"] == 10
    assert {"fpr", "tpr", "thresholds", "confusion_matrix"} <= set(report.classification)
    # The HTML: the campaign's charts inline (a line with a point per round in each), the first
    # rows of the batch, texts escaped.
    svg = report.html.split("<svg")[1].split("</svg>")[0]
    assert svg.count("<polyline") == 3
    assert svg.count("<circle") == 3 * 2
    for label in ("positives found", "average precision (eval split)", "pool, % of U"):
        assert f">{label}</text>" in svg
    assert report.html.count("<tr><td>") == 3 + 1, "three batch rows, one annotator row"
    assert "| (no annotator named) | 110 |" in report.markdown, "files that name no annotator"
    batch = campaign.state().batch
    assert html.escape(batch[0]["text"]) in report.html
    assert "<" + batch[0]["text"].split("<")[1] not in report.html, "item texts are escaped"
    assert "| labeled | 110 |" in report.markdown
    assert campaign.storage.where("inbox/001") in report.markdown
    inbox = campaign.storage.where("inbox/001")
    assert (report.keep_going, report.reason) == (True, f"10 example(s) to label; drop labels in {inbox}/")


def test_the_report_stops_at_the_budget_and_at_a_target(campaign):
    campaign.round()
    assert round_report(campaign).keep_going
    stop = round_report(campaign, target_metric="average_precision", target_value=0.0)
    assert not stop.keep_going
    assert stop.reason.startswith("target reached: average_precision ")
    label_open_batch(campaign)
    campaign.round()
    label_open_batch(campaign)
    campaign.round()
    spent = round_report(campaign)
    assert (spent.keep_going, spent.reason) == (False, "budget spent: 120 of 120 labeled")


@pytest.mark.hostile
def test_report_files_go_only_where_nothing_else_is(campaign, tmp_path, capsys):
    """`seals-al report --out` writes its four files again into its own folder, and refuses a
    folder holding anything else: pointed at a committed round, it must not replace metrics.json."""
    from seals_al.cli import main

    campaign.round()
    uri = campaign.storage.uri
    out = tmp_path / "report"
    assert main(["report", uri, "--out", str(out)]) == 0
    assert main(["report", uri, "--out", str(out)]) == 0, "an earlier report's folder is reused"
    assert sorted(p.name for p in out.iterdir()) == [
        "keep_going",
        "metrics.json",
        "report.html",
        "summary.md",
    ]
    round_folder = tmp_path / "c" / "rounds" / "000"
    metrics = (round_folder / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["report", uri, "--out", str(round_folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {round_folder}: exists, is not empty and holds no earlier report (")
    assert (round_folder / "metrics.json").read_bytes() == metrics
    assert not (round_folder / "report.html").exists()


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (100, 1300, [0, 500, 1000, 1500]),
        (0.0, 0.87, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0031, 0.0035, [0.0031, 0.0032, 0.0033, 0.0034, 0.0035]),
        (5, 5, [4.4, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6]),
        (0, 0, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        (1.0, 1.0000000000000002, [0.9, 0.95, 1.0, 1.05, 1.1]),  # an AP of 1 with float noise
    ],
)
def test_chart_ticks_are_round_values_covering_the_data(lo, hi, expected):
    ticks = _ticks(lo, hi)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo + 1e-12
    assert ticks[-1] >= hi - 1e-12


def test_the_report_stage_draws_without_matplotlib(campaign, tmp_path):
    """`seals-al report` in a fresh process, as its pod runs it: the page and its charts come
    without importing matplotlib (about a second of the stage's time)."""
    campaign.round()
    loaded = modules_loaded_by(["report", campaign.storage.uri, "--out", str(tmp_path / "r")])
    assert not loaded & {"matplotlib", "sklearn", "faiss"}
    assert "<svg" in (tmp_path / "r" / "report.html").read_text()


def test_the_charts_leave_out_values_that_are_not_numbers():
    history = [
        {"labeled": 100, "positives": 5, "average_precision": float("nan"), "pool_fraction": 0.01},
        {"labeled": 200, "positives": 9, "average_precision": 0.5, "pool_fraction": 0.02},
    ]
    svg = history_svg(history, "t")
    assert "nan" not in svg
    assert svg.count("<circle") == 2 + 1 + 2


def test_who_gave_each_label_is_kept_in_the_round_and_shown_by_status_and_the_report(campaign):
    """Provenance: each labeled row keeps its file, the file's sha256 and the annotator the file
    names; status and the round report say who labeled how much."""
    import hashlib

    campaign.round()
    pending = [row["id"] for row in campaign.state().pending]
    truth = campaign.dataset().truth_of(pending, "c0")
    text = "id,label,annotator\n" + "".join(
        f"{i},{t},{'ann@x' if n % 2 else 'bob@x'}\n"
        for n, (i, t) in enumerate(zip(pending, truth, strict=True))
    )
    key = f"{campaign.keys(campaign.state().round).inbox}/people.csv"
    campaign.storage.write_text(key, text)
    campaign.round()
    labeled = campaign.state().labeled
    row = labeled[pending[1]]
    assert row["by"] == ["ann@x"]
    assert row["source"] == key
    assert row["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert labeled[pending[0]]["by"] == ["bob@x"]
    lines = campaign.status()["labeled_by"]
    assert (
        lines[0]
        == f"(no annotator named): {len(labeled) - len(pending)} label(s), " + lines[0].split(", ")[1]
    )
    assert any(line.startswith(f"ann@x: {len(pending) // 2} label(s)") for line in lines)
    assert f"| bob@x | {len(pending) - len(pending) // 2} |" in round_report(campaign).markdown


def test_the_labeled_set_is_written_with_its_provenance_and_reads_back_as_a_label_file(
    campaign, tmp_path, capsys
):
    from seals_al.cli import main
    from seals_al.labelformats.files import read_label_file

    campaign.round()
    pending = [row["id"] for row in campaign.state().pending]
    truth = campaign.dataset().truth_of(pending, "c0")
    rows = "".join(f"{i},{t},ann@x\n" for i, t in zip(pending, truth, strict=True))
    campaign.storage.write_text(f"{campaign.keys(0).inbox}/people.csv", "id,label,annotator\n" + rows)
    campaign.round()
    uri, out = campaign.storage.uri, tmp_path / "labeled.csv"
    assert main(["labeled", uri, "--out", str(out)]) == 0
    labeled = campaign.state().labeled
    _, answers, _, problems = read_label_file(out.name, out.read_bytes(), "c0")
    assert not problems
    assert {a.item_id: a.label for a in answers} == {i: row["label"] for i, row in labeled.items()}
    assert {a.item_id for a in answers if a.provenance.get("by") == ["ann@x"]} == set(pending)
    assert main(["labeled", uri, "--out", str(tmp_path / "labeled.jsonl")]) == 0
    lines = (tmp_path / "labeled.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [labeled[i] for i in sorted(labeled)]
    assert main(["labeled", uri, "--out", str(out)]) == 0, "its own earlier output is replaced"


@pytest.mark.hostile
def test_the_labeled_set_is_never_written_into_the_campaign_or_over_a_users_file(campaign, tmp_path, capsys):
    from seals_al.cli import main

    campaign.round()
    uri = campaign.storage.uri
    assert main(["labeled", uri, "--out", f"{uri}/labeled.csv"]) == 2
    assert "inside the campaign" in capsys.readouterr().err
    (tmp_path / "mine.csv").write_text("a,b\n1,2\n")
    assert main(["labeled", uri, "--out", str(tmp_path / "mine.csv")]) == 2
    assert "is not a labeled set seals-al wrote" in capsys.readouterr().err
    assert (tmp_path / "mine.csv").read_text() == "a,b\n1,2\n"
    assert main(["labeled", uri, "--out", str(tmp_path / "labeled.parquet")]) == 2
    assert "write the labeled set as .csv or .jsonl" in capsys.readouterr().err
