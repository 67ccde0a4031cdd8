"""train: fit the classifier on the staged labeled set and evaluate it."""

from typing import NamedTuple

from components._base import seals_component


@seals_component
def train(
    campaign_uri: str,
    workspace: str = "",
) -> NamedTuple("Outputs", [("round", int), ("labeled", int), ("positives", int)]):
    """Stage 2: fit the balanced logistic regression on the staged labeled set; write `model.json`
    (plain coefficients, no pickle, with the sha256 of the labels it was fit on) and `evaluation.json`
    (AP, recall, ROC points, confusion matrix on the evaluation split when truth is known).

    Args:
        campaign_uri: the campaign (label_ingest must have staged the round).
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        The round, the labeled set's size and its positives.
    """
    from seals_al.storage import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign

    evaluation = Campaign(campaign_uri).train()
    outputs = namedtuple("Outputs", ["round", "labeled", "positives"])
    return outputs(evaluation["round"], evaluation["labeled"], evaluation["positives"])
