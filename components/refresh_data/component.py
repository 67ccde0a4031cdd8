"""refresh_data: embed the campaign's new items into its published store and add them to its index."""

from typing import NamedTuple

from kfp import dsl

from components._base import seals_component


@seals_component
def refresh_data(
    campaign_uri: str,
    metrics: dsl.Output[dsl.Metrics],
    enabled: bool = True,
    workspace: str = "",
) -> NamedTuple("Outputs", [("embedded", int), ("index_updated", bool)]):
    """Bring the campaign's published embeddings and index up to date with its items before a
    round: items new since the store was made are embedded (Beam) and appended to it, old rows
    keeping their row ids; their rows are added to the index (a single-file index keeps its IVF
    quantizer as trained; any other is built again with its own factory, layout and search
    parameters). Unchanged data costs the manifest checks alone.

    Args:
        campaign_uri: the campaign (its data, embeddings and index settings).
        metrics: items embedded now, rows of the store and of the index.
        enabled: false: do nothing (a pipeline parameter turns the step off).
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        How many items were embedded now, and whether the index changed.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign
    from seals_al.campaign.refresh import refresh_data as refresh

    outputs = namedtuple("Outputs", ["embedded", "index_updated"])
    if not enabled:
        return outputs(0, False)
    done = refresh(Campaign(campaign_uri, progress=False))
    metrics.log_metric("embedded", done.embedded)
    metrics.log_metric("store_rows", done.store_rows)
    if done.index_rows is not None:
        metrics.log_metric("index_rows", done.index_rows)
    print("\n".join(done.lines()))
    return outputs(done.embedded, done.index_updated)
