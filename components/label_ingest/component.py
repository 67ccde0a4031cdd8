"""label_ingest: validate and stage the label files that came back for the open batch."""

from components._base import seals_component


@seals_component
def label_ingest(campaign_uri: str, workspace: str = "") -> bool:
    """Stage 1 of a round: validate every label file not ingested yet (the seeds before round 0, then
    `inbox/NNN/` of the open batch): CSV, JSONL or Label Studio export. With a labeling tool
    (`label_tool`; its URL and key from a Kubernetes Secret) it first pushes what the tool lacks of
    the open batch and pulls the answers into the inbox. A malformed file is rejected whole
    (problems with their lines under `reports/`) and the step fails naming the file and line;
    relabels are recorded, never silent. Stages `rounds/NNN/labeled.jsonl`, `relabels.jsonl`,
    `ingested.json` and raw copies.

    Args:
        campaign_uri: the campaign.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        Whether new labels were staged (what was staged is printed).
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from seals_al.campaign import Campaign
    from seals_al.labeltools.loop import sync_before_ingest

    campaign = Campaign(campaign_uri)
    for line in sync_before_ingest(campaign):
        print(line)
    staged = campaign.ingest()
    if staged is None:
        print("no new labels: nothing to do")
        return False
    print(
        f"round {staged.round}: {staged.new_labels} new label(s), {staged.relabels} relabel(s), "
        f"{staged.labeled} labeled, from {', '.join(staged.files)}"
    )
    return True
