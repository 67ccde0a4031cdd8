"""wait_for_labels: a sensor that polls the open round's inbox until labels arrive."""

from components._base import seals_component


@seals_component
def wait_for_labels(campaign_uri: str, poll_seconds: float = 60.0, timeout_seconds: float = 86400.0) -> int:
    """Poll ``inbox/NNN/`` of the open round every ``poll_seconds`` until a label file not
    ingested yet is there. On timeout the step fails with a message naming the inbox; nothing is
    written, so the campaign stays valid: drop labels later and resume with another run.

    Args:
        campaign_uri: the campaign.
        poll_seconds: seconds between polls.
        timeout_seconds: give up after this long.

    Returns:
        How many new label files arrived.
    """
    from seals_al.campaign import Campaign

    return len(Campaign(campaign_uri).wait_for_labels(poll_seconds, timeout_seconds))
