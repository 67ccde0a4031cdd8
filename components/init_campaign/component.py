"""init_campaign: create the campaign (configuration and seed labels) unless the same one exists."""

from kfp import dsl

from components._base import seals_component


@seals_component
def init_campaign(
    campaign_uri: str,
    items_uri: str,
    concept: str,
    embeddings_uri: str,
    index_uri: str,
    campaign: dsl.Output[dsl.Artifact],
    seed_labels_uri: str = "",
    strategy: str = "maxent",
    mode: str = "seals",
    k: int = 100,
    batch_size: int = 100,
    budget: int = 1000,
    seed: int = 0,
    id_column: str = "id",
    text_column: str = "text",
    truth_column: str = "",
    split_column: str = "",
    eval_split: str = "test",
    folder_per_concept: bool = False,
    label_tool: str = "",
    label_tool_url: str = "",
    label_tool_project: str = "",
    removed_uri: str = "",
    train_on_removed: bool = False,
    workspace: str = "",
) -> str:
    """Create the campaign (configuration + seed labels) at a storage URI, or find the same one there
    (re-runs are no-ops; other settings are an error, never overwritten). Without `seed_labels_uri`,
    seeds are drawn from the truth column (5 positives + 95 negatives): simulation.

    Args:
        campaign_uri: a local folder or gs://bucket/prefix.
        items_uri: the item table.
        concept: the rare concept searched for.
        embeddings_uri: the store from embed.
        index_uri: the index from build_index.
        campaign: an artifact holding the campaign's configuration (the state lives at the URI).
        seed_labels_uri: a label file (CSV, JSONL, Label Studio JSON), local or gs://.
        strategy: maxent, id, mlp or random.
        mode: seals or global.
        k: neighbours per labeled example.
        batch_size: examples per round.
        budget: labels in all.
        seed: tie-break and random seed.
        id_column: the external id column.
        text_column: the text shown to labelers.
        truth_column: ground truth for metrics (and the oracle); "" for none.
        split_column: the split column; "" for none.
        eval_split: the evaluation split.
        folder_per_concept: put the campaign in a folder named after the concept.
        label_tool: the labeling tool (label_studio, terminal, oracle); "" for label files only
            (or the tool named by the cluster's Secret).
        label_tool_url: the tool's URL ("" for none; the Secret's URL wins over it).
        label_tool_project: an existing project of the tool to use; "" to create one.
        removed_uri: a tombstone list (ids removed for retention or privacy, one per line), read
            every round: they leave the pool and every later batch; "" for none.
        train_on_removed: whether tombstoned items' labels still train while they are in the data.
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        The campaign URI.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    import json

    from seals_al.campaign import Campaign, CampaignConfig, ensure_campaign
    from seals_al.campaign.layout import concept_folder
    from seals_al.labeltools.oracle import seed_file_from_truth
    from seals_al.labeltools.registry import check_tool_name
    from seals_al.settings import DataConfig, RoundConfig

    config = CampaignConfig(
        concept=concept,
        seed_labels=seed_labels_uri,
        dataset=DataConfig(
            data=items_uri,
            embeddings=embeddings_uri or None,
            index=index_uri or None,
            id_column=id_column,
            text_column=text_column,
            truth_column=truth_column or None,
            split_column=split_column or None,
            eval_split=eval_split,
            removed=removed_uri or None,
        ),
        learning=RoundConfig(strategy=strategy, mode=mode, k=k, batch_size=batch_size, seed=seed),
        budget=budget,
        train_on_removed=train_on_removed,
        label_tool=label_tool or ("label_studio" if label_tool_url else None),
        label_tool_url=label_tool_url or None,
        label_tool_project=label_tool_project or None,
    )
    check_tool_name(config.label_tool, "label_tool")
    uri = concept_folder(campaign_uri, concept) if folder_per_concept else campaign_uri
    ensure_campaign(config, uri, None if seed_labels_uri else lambda: seed_file_from_truth(config))
    with open(campaign.path, "w") as f:
        json.dump(Campaign(uri, progress=False).config.to_json(), f, indent=2)
    campaign.metadata["uri"] = uri
    return uri
