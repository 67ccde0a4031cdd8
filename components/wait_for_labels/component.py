"""wait_for_labels: a sensor that waits until labels come back for the open batch."""

from components._base import seals_component


@seals_component
def wait_for_labels(
    campaign_uri: str,
    poll_seconds: float = 60.0,
    timeout_seconds: float = 86400.0,
    labeled_fraction: float = 1.0,
    workspace: str = "",
) -> int:
    """A sensor: polls the open round's `inbox/NNN/` until a label file that was not ingested yet is
    there. With a labeling tool (`label_tool`; its URL and key from a Kubernetes Secret) it first
    pushes the batch if it is not there yet, then polls the tool until `labeled_fraction` of the
    batch is answered (Label Studio: an annotation that was not cancelled), and pulls the answers
    into the inbox. On timeout it fails with a message naming the inbox and the batch; it writes nothing
    else, so the campaign stays valid: label later and resume with another run (or the
    one-round-per-run pipeline, or `seals-al round`).

    Args:
        campaign_uri: the campaign.
        poll_seconds: seconds between polls.
        timeout_seconds: give up after this long.
        labeled_fraction: with a labeling tool: the fraction of the batch that must be answered.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        How many new label files arrived.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from seals_al.campaign import Campaign
    from seals_al.labeltools.loop import wait_for_labels as wait

    return len(wait(Campaign(campaign_uri), poll_seconds, timeout_seconds, labeled_fraction))
