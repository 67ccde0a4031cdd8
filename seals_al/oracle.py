"""The simulated labeler of a campaign: answers the open batch from the ground-truth column, as a
person would, into the round's inbox (demos, CI, label-efficiency studies). ``seals-al simulate``
needs no labeler: its oracle answers in memory (:mod:`seals_al.simulate`)."""

from __future__ import annotations

import json

from seals_al.campaign import Campaign
from seals_al.campaign.layout import CONFIG, oracle_labels
from seals_al.errors import SealsError


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
    truth = campaign.items().truth_of(ids, concept)
    key = oracle_labels(state.round)
    rows = [json.dumps({"id": i, "label": t}) + "\n" for i, t in zip(ids, truth, strict=True)]
    campaign.storage.write_text(key, "".join(rows))
    return key
