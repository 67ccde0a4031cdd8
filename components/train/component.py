"""train: fit the classifier on the staged labeled set and evaluate it."""

from typing import NamedTuple

from components._base import seals_component


@seals_component
def train(
    campaign_uri: str,
) -> NamedTuple("Outputs", [("round", int), ("labeled", int), ("positives", int)]):
    """Stage 2: fit the balanced logistic regression on the staged labeled set; write `model.json`
    (plain coefficients, no pickle, with the sha256 of the labels it was fit on) and `evaluation.json`
    (AP, recall, ROC points, confusion matrix on the evaluation split when truth is known).

    Args:
        campaign_uri: the campaign (label_ingest must have staged the round).

    Returns:
        The round, the labeled set's size and its positives.
    """
    from collections import namedtuple

    from seals_al.campaign import Campaign

    evaluation = Campaign(campaign_uri).train()
    outputs = namedtuple("Outputs", ["round", "labeled", "positives"])
    return outputs(evaluation["round"], evaluation["labeled"], evaluation["positives"])
