"""score: search the whole corpus with the round's model; the items ranked, as a Dataset."""

from typing import NamedTuple

from kfp import dsl

from components._base import seals_component


@seals_component
def score(
    campaign_uri: str,
    scores: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    summary: dsl.Output[dsl.Markdown],
    new_only: bool = False,
    precisions: str = "0.5,0.8,0.9,0.95",
    beam_args: list = [],  # noqa: B006 (KFP reads the default from the signature)
    workspace: str = "",
) -> NamedTuple("Outputs", [("scored", int), ("round", int)]):
    """Score every item of the campaign's data (as it is now) with the newest trained round's
    classifier over the stored embeddings (an item not embedded yet is embedded first), in this
    pod, or in a Beam pipeline (RunInference) when Beam options are given, and write them ranked:
    Parquet with id, score (P(concept)) and rank. The Metrics and the Markdown summary give how
    many items score at or above each operating threshold.

    Args:
        campaign_uri: the campaign (a round must have been trained).
        scores: the ranked items (Parquet: id, score, rank).
        metrics: items scored, and the count at or above each precision's threshold.
        summary: the counts as a Markdown table.
        new_only: score only the items that no earlier score run scored (a recurring run).
        precisions: where the operating thresholds are: comma-separated precisions on the evaluation
            split.
        beam_args: Beam pipeline options; with any, a Beam pipeline (RunInference) scores: on
            any runner for a campaign on gs:// over a published store (its workers read their
            ranges of the store there), else on Beam's local runners; none (the default) scores
            in this pod's own process, faster.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        How many items were scored, and the round whose model scored them.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign
    from seals_al.export import parse_precisions
    from seals_al.score.corpus import score_campaign

    done = score_campaign(
        Campaign(campaign_uri),
        scores.path,
        new_only=new_only,
        precisions=parse_precisions(precisions),
        beam_args=[str(a) for a in beam_args],
    )
    scores.metadata.update({"rows": done.scored, "round": done.round, "format": "parquet"})
    for name, value in done.metric_values().items():
        metrics.log_metric(name, value)
    with open(summary.path, "w") as f:
        f.write(done.markdown())
    print("\n".join(done.lines()))
    outputs = namedtuple("Outputs", ["scored", "round"])
    return outputs(done.scored, done.round)
