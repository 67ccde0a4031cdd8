"""label_push: make the open batch available in the campaign's labeling tool (when it has one)."""

from typing import NamedTuple

from components._base import seals_component


@seals_component
def label_push(campaign_uri: str, workspace: str = "") -> NamedTuple(
    "Outputs", [("where", str), ("items", int)]
):
    """After select: push the open batch to the campaign's labeling tool (`label_tool`; its URL and
    key from the cluster's Secret as `LABEL_TOOL_URL` and `LABEL_TOOL_API_KEY`, or the tool's own
    variables). Label Studio: create the project on first use (a single choice between the concept
    and `not <concept>`), import the open batch's items that have no task yet, with the model's
    guess as a pre-annotation, and record the task ids in the campaign. Idempotent: a retry adds
    nothing twice. Without a tool it does nothing. Down or slow: retried with backoff, then fails
    naming the URL.

    Args:
        campaign_uri: the campaign (a round must be committed).
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        Where people label the batch ("" without a tool) and how many of its items the tool holds.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign
    from seals_al.labeltools.loop import push_if_configured

    outputs = namedtuple("Outputs", ["where", "items"])
    pushed = push_if_configured(Campaign(campaign_uri, progress=False))
    if pushed is None:
        print("the campaign has no labeling tool (label_tool): nothing pushed")
        return outputs("", 0)
    print(pushed.summary())
    return outputs(pushed.where, pushed.items)
