"""wait_for_labels: a sensor that polls the open round's inbox until labels arrive."""

from components._base import seals_component


@seals_component
def wait_for_labels(
    campaign_uri: str, poll_seconds: float = 60.0, timeout_seconds: float = 86400.0, workspace: str = ""
) -> int:
    """A sensor: polls the open round's `inbox/NNN/` until a label file that was not ingested yet is
    there. On timeout it fails with a message naming the inbox and the batch; it writes nothing, so the
    campaign stays valid: drop labels later and resume with another run (or the one-round-per-run
    pipeline, or `seals-al round`).

    Args:
        campaign_uri: the campaign.
        poll_seconds: seconds between polls.
        timeout_seconds: give up after this long.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        How many new label files arrived.
    """
    from seals_al.storage import use_workspace

    use_workspace(workspace)
    from seals_al.campaign import Campaign

    return len(Campaign(campaign_uri).wait_for_labels(poll_seconds, timeout_seconds))
