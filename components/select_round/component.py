"""select_round: expand the candidate pool, select the batch, publish and commit the round."""

from typing import NamedTuple

from kfp import dsl

from components._base import seals_component


@seals_component
def select_round(
    campaign_uri: str,
    batch: dsl.Output[dsl.Dataset],
    workspace: str = "",
) -> NamedTuple("Outputs", [("round", int), ("batch_size", int), ("pool_size", int)]):
    """Stage 3: expand the candidate pool with the newly labeled examples' neighbours, select the batch
    (SEALS: scoring only the pool; global: all of U), publish `to_label.jsonl` (id, text, score,
    strategy, rank, why: the labeled example whose neighbours brought it in) and a Label Studio task
    file, save the pool, and write `COMMITTED` last. A crash before that leaves the previous round
    current.

    Args:
        campaign_uri: the campaign (train must have run for the round).
        batch: a copy of to_label.jsonl, for the UI.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        The round, the batch size and the pool size.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign

    campaign = Campaign(campaign_uri)
    metrics = campaign.select()
    key = campaign.keys(metrics["round"]).to_label
    with open(batch.path, "wb") as f:
        f.write(campaign.storage.read_bytes(key))
    batch.metadata.update({"uri": campaign.storage.where(key), "rows": metrics["batch"]})
    outputs = namedtuple("Outputs", ["round", "batch_size", "pool_size"])
    return outputs(metrics["round"], metrics["batch"], metrics["pool_size"])
