"""The labeling tool seam (seals_al.labeltools): the setting that chooses a tool (and the older Label
Studio settings it replaces), the registry, the oracle and terminal tools through the same protocol,
and a second tool added with nothing but a class and a registry line."""

from __future__ import annotations

import io
import json
import os

import pytest
from rich.console import Console

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.cli import main
from seals_al.errors import SealsError
from seals_al.labeltools import registry
from seals_al.labeltools.base import Note, Progress, open_state
from seals_al.labeltools.loop import sync_before_ingest, wait_for_labels
from seals_al.labeltools.registry import tool_of

from .test_campaign import BATCH, truth_of, write_config


def make(tmp_path, clinc_slice, cache_dir, **settings) -> Campaign:
    uri = str(tmp_path / "campaign")
    init(CampaignConfig.from_yaml(write_config(tmp_path, clinc_slice, cache_dir, **settings)), uri)
    return Campaign(uri, progress=False)


@pytest.fixture(autouse=True)
def no_tool_in_the_environment(monkeypatch):
    for name in ("LABEL_TOOL", "LABEL_TOOL_URL", "LABEL_STUDIO_URL"):
        monkeypatch.delenv(name, raising=False)


# -- the settings ---------------------------------------------------------------------------------
def test_the_older_label_studio_settings_are_read_as_the_label_tool(tmp_path, clinc_slice, cache_dir):
    path = write_config(
        tmp_path, clinc_slice, cache_dir, label_studio_url="http://ls:8080", label_studio_project=7
    )
    config = CampaignConfig.from_yaml(path)
    assert (config.label_tool, config.label_tool_url, config.label_tool_project) == (
        "label_studio",
        "http://ls:8080",
        "7",
    )
    old_json = {k: v for k, v in config.to_json().items() if not k.startswith("label_tool")}
    old_json["label_studio_url"], old_json["label_studio_project"] = "http://ls:8080", 7
    assert CampaignConfig.from_json(old_json, "campaign.json") == config, "a campaign.json written before"
    both = write_config(
        tmp_path, clinc_slice, cache_dir, label_studio_url="http://a", label_tool_url="http://b"
    )
    with pytest.raises(SealsError, match="give label_tool_url or the older label_studio_url, not both"):
        CampaignConfig.from_yaml(both)


def test_an_unknown_tool_is_refused_at_init_naming_the_file(tmp_path, clinc_slice, cache_dir, capsys):
    path = write_config(tmp_path, clinc_slice, cache_dir, label_tool="argila")
    assert main(["init", str(path), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: label_tool 'argila' is not a known labeling tool; known: label_studio, oracle, terminal"
        in err
    )
    assert not (tmp_path / "c").exists(), "nothing written"


def test_the_tool_is_the_setting_else_the_environment_else_none(
    tmp_path, clinc_slice, cache_dir, monkeypatch
):
    campaign = make(tmp_path, clinc_slice, cache_dir)
    assert tool_of(campaign) is None, "label files only"
    monkeypatch.setenv("LABEL_TOOL", "oracle")
    assert tool_of(campaign).name == "oracle"
    monkeypatch.setenv("LABEL_TOOL", "nope")
    with pytest.raises(SealsError, match=r"\$LABEL_TOOL: label_tool 'nope' is not a known labeling tool"):
        tool_of(campaign)
    monkeypatch.delenv("LABEL_TOOL")
    for variable in ("LABEL_STUDIO_URL", "LABEL_TOOL_URL"):  # a URL alone: Label Studio, as before
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
        with pytest.raises(SealsError, match="set LABEL_STUDIO_API_KEY"):
            tool_of(campaign)
        monkeypatch.delenv(variable)


# -- the oracle and the terminal, through the protocol ------------------------------------------------
def test_the_oracle_tool_answers_through_the_generic_wait(tmp_path, clinc_slice, cache_dir):
    campaign = make(tmp_path, clinc_slice, cache_dir, label_tool="oracle")
    with pytest.raises(SealsError, match="no batch yet"):
        tool_of(campaign).push()
    campaign.round()
    assert wait_for_labels(campaign, 0.1, 30) == ["inbox/000/oracle.jsonl"]
    truth = truth_of(clinc_slice)
    answers = [json.loads(line) for line in campaign.storage.read_text("inbox/000/oracle.jsonl").splitlines()]
    assert {a["id"]: a["label"] for a in answers} == {
        row["id"]: truth[row["id"]] for row in campaign.state().batch
    }
    assert campaign.round()["labeled"] == 100 + BATCH


def test_the_terminal_tool_counts_the_answers_saved_as_they_are_given(tmp_path, clinc_slice, cache_dir):
    from seals_al.labeltools.terminal import run_labeler

    campaign = make(tmp_path, clinc_slice, cache_dir, label_tool="terminal")
    campaign.round()
    tool = tool_of(campaign)
    pushed = tool.push()
    assert (pushed.where, pushed.items) == (f"seals-al label {campaign.storage.uri}", BATCH)
    assert tool.progress() == Progress(0, BATCH)
    answers = iter(["y", "n", "q"])
    run_labeler(campaign, Console(file=io.StringIO()), ask=lambda prompt: next(answers))
    assert tool.progress() == Progress(2, BATCH)
    assert not tool.progress().reached(0.5)
    assert Progress(5, BATCH).reached(0.5)
    assert tool.pull().written is None, "the answers are in the inbox already"


# -- a second tool: a class and a registry line, nothing else -------------------------------------------
class Spreadsheet:
    """A stand-in for a second labeling tool (Argilla, Doccano, a web form): its "server" is a JSON
    file of answers beside the campaign, as a person's sheet export would be."""

    name = "spreadsheet"
    title = "the spreadsheet"

    def __init__(self, campaign: Campaign):
        self.campaign = campaign
        self.sheet = os.path.join(os.environ["SHEET_DIR"], "sheet.json")

    @classmethod
    def of(cls, campaign: Campaign) -> Spreadsheet:
        return cls(campaign)

    def _answers(self) -> dict[str, int]:
        if not os.path.exists(self.sheet):
            return {}
        with open(self.sheet) as f:
            return json.load(f)

    def push(self) -> Note:
        batch = open_state(self.campaign).batch
        return Note(f"sheet: {len(batch)} row(s)", self.sheet, len(batch))

    def pull(self) -> Note:
        key = f"inbox/{open_state(self.campaign).round:03d}/sheet.csv"
        rows = "".join(f"{i},{label}\n" for i, label in sorted(self._answers().items()))
        self.campaign.storage.write_text(key, "id,label\n" + rows)
        return Note(f"sheet: written to {key}", written=key)

    def progress(self) -> Progress:
        pending = {row["id"] for row in self.campaign.state().pending}
        return Progress(len(pending & self._answers().keys()), len(pending))


def test_a_second_tool_is_a_class_and_a_registry_line(tmp_path, clinc_slice, cache_dir, monkeypatch, capsys):
    """The registry line is all that changes: the CLI's push, progress and pull, the wait and the
    ingest's pull (what the components and the Argo template run) use it as they use Label Studio."""
    monkeypatch.setitem(registry.TOOLS, "spreadsheet", "tests.test_labeltools:Spreadsheet")
    monkeypatch.setenv("SHEET_DIR", str(tmp_path))
    campaign = make(tmp_path, clinc_slice, cache_dir, label_tool="spreadsheet")
    uri = campaign.storage.uri
    campaign.round()
    assert main(["label-tool", "push", uri]) == 0
    assert f"sheet: {BATCH} row(s)" in capsys.readouterr().out
    truth = truth_of(clinc_slice)
    answers = {row["id"]: truth[row["id"]] for row in campaign.state().batch}
    (tmp_path / "sheet.json").write_text(json.dumps(answers))
    assert main(["label-tool", "progress", uri]) == 0
    assert f"{BATCH}/{BATCH} item(s) answered in the spreadsheet" in capsys.readouterr().out
    assert sync_before_ingest(campaign) == [f"sheet: {BATCH} row(s)", "sheet: written to inbox/000/sheet.csv"]
    assert campaign.round()["labeled"] == 100 + BATCH
