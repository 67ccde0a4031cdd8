"""The simulated labeler as a tool (``label_tool: oracle``): seeds drawn from the ground-truth
column, and answers to the open batch written into the round's inbox as a person would (demos, CI,
label-efficiency studies). ``seals-al simulate`` needs no labeler: its oracle answers in memory
(:mod:`seals_al.simulate`)."""

from __future__ import annotations

import json

from seals_al.campaign import Campaign, CampaignConfig
from seals_al.campaign.layout import CONFIG, oracle_labels
from seals_al.errors import SealsError
from seals_al.items import Items, draw_seeds
from seals_al.labeltools.base import BoundTool, Note, Progress, open_state
from seals_al.settings import SEED_NEGATIVES, SEED_POSITIVES


def seed_file_from_truth(config: CampaignConfig) -> tuple[str, bytes]:
    """A seed label file (CSV ``id,label``) of the paper's 5 positives + 95 negatives, drawn from
    the truth column of U with the campaign's seed: what a simulated campaign starts from."""
    if not config.dataset.truth_column:
        raise SealsError(f"concept {config.concept!r}: seeds from ground truth need truth_column")
    items = Items.load(config.dataset)
    seeds = draw_seeds(items, config.concept, SEED_POSITIVES, SEED_NEGATIVES, config.learning.seed)
    return "seeds.csv", ("id,label\n" + "".join(f"{i},{y}\n" for i, y in seeds)).encode()


def label_open_batch(campaign: Campaign) -> str | None:
    """Write the true labels of the open batch's pending examples to the round's inbox.

    Returns:
        The key written, or None when nothing is pending.
    """
    concept = campaign.config.concept
    if not campaign.config.dataset.truth_column:
        raise SealsError(f"{campaign.storage.where(CONFIG)}: the oracle needs truth_column")
    state = campaign.state()
    if not state.pending:
        return None
    ids = [row["id"] for row in state.pending]
    truth = campaign.dataset().truth_of(ids, concept)
    key = oracle_labels(state.round)
    rows = [json.dumps({"id": i, "label": t}) + "\n" for i, t in zip(ids, truth, strict=True)]
    campaign.storage.write_text(key, "".join(rows))
    return key


class Oracle(BoundTool):
    """Answers every pending item of the open batch from the truth column, at once."""

    name = "oracle"
    title = "the oracle"

    def push(self) -> Note:
        batch = len(open_state(self.campaign).batch)
        column = self.campaign.config.dataset.truth_column
        return Note(f"oracle: {batch} item(s) answered from the truth column {column!r}", "oracle", batch)

    def pull(self) -> Note:
        open_state(self.campaign)  # an error before any batch, as every tool gives
        key = label_open_batch(self.campaign)
        where = self.campaign.storage.where(key) if key else None
        return Note(f"oracle: {'answers written to ' + where if where else 'nothing pending'}", written=key)

    def progress(self) -> Progress:
        pending = len(open_state(self.campaign).pending)
        return Progress(pending, pending)  # every pending item has its answer, in the truth column
