"""label_ingest: validate and stage the label files that came back for the open batch."""

from components._base import seals_component


@seals_component
def label_ingest(campaign_uri: str) -> bool:
    """Ingest every label file not ingested yet (the seeds before round 0, then the open round's
    inbox). A malformed file is rejected whole with its problems reported under reports/, and the
    step fails naming the file and line; nothing is staged then.

    Args:
        campaign_uri: the campaign.

    Returns:
        Whether new labels were staged (what was staged is printed).
    """
    from seals_al.campaign import Campaign

    staged = Campaign(campaign_uri).ingest()
    if staged is None:
        print("no new labels: nothing to do")
        return False
    print(
        f"round {staged.round}: {staged.new_labels} new label(s), {staged.relabels} relabel(s), "
        f"{staged.labeled} labeled, from {', '.join(staged.files)}"
    )
    return True
