"""train: fit the classifier on the staged labeled set, evaluate it, and export it as a Model."""

from typing import NamedTuple

from kfp import dsl

from components._base import seals_component


@seals_component
def train(
    campaign_uri: str,
    model: dsl.Output[dsl.Model],
    precisions: str = "0.5,0.8,0.9,0.95",
    workspace: str = "",
) -> NamedTuple("Outputs", [("round", int), ("labeled", int), ("positives", int)]):
    """Stage 2: fit the balanced logistic regression on the staged labeled set; write `model.json`
    (plain coefficients, no pickle, with the sha256 of the labels it was fit on) and `evaluation.json`
    (AP, recall, ROC points, confusion matrix on the evaluation split when truth is known); and hand
    the round's model on as a KFP Model artifact: portable JSON (`seals-model/1`: the classifier, the
    embedding model's name and version, the concept, the round, the labeled-set digest, operating
    thresholds at the given precisions on the evaluation split).

    Args:
        campaign_uri: the campaign (label_ingest must have staged the round).
        model: the exported model (JSON, never a pickle); its metadata names the concept, round,
            embedding model and thresholds.
        precisions: where to put the operating thresholds: comma-separated precisions on the
            evaluation split.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        The round, the labeled set's size and its positives.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign
    from seals_al.export import export_round, parse_precisions, write_model

    campaign = Campaign(campaign_uri)
    evaluation = campaign.train()
    exported = export_round(campaign, evaluation["round"], parse_precisions(precisions))
    write_model(exported, model.path)
    model.metadata.update(exported.metadata())
    outputs = namedtuple("Outputs", ["round", "labeled", "positives"])
    return outputs(evaluation["round"], evaluation["labeled"], evaluation["positives"])
