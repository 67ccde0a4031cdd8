"""oracle_labeler: simulation only; labels the open batch from the ground-truth column."""

from components._base import seals_component


@seals_component
def oracle_labeler(campaign_uri: str, workspace: str = "") -> str:
    """Simulation only: writes the open batch's true labels (from the campaign's truth column) to
    `inbox/NNN/oracle.jsonl`, as a person would. Used by the simulation and many-concepts pipelines,
    `make demo` and CI.

    Args:
        campaign_uri: the campaign.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        Where the labels were written ("" when nothing was pending).
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from seals_al.campaign import Campaign
    from seals_al.labeltools.oracle import label_open_batch

    campaign = Campaign(campaign_uri)
    key = label_open_batch(campaign)
    return campaign.storage.where(key) if key else ""
