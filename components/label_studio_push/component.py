"""label_studio_push: import the open batch into Label Studio as tasks (when it is configured)."""

from typing import NamedTuple

from components._base import seals_component


@seals_component
def label_studio_push(campaign_uri: str, workspace: str = "") -> NamedTuple(
    "Outputs", [("project_url", str), ("tasks", int)]
):
    """After select: with Label Studio configured (`LABEL_STUDIO_URL`, or the campaign's
    `label_studio_url`, and `LABEL_STUDIO_API_KEY`, from a Kubernetes Secret), create the project on
    first use (a single choice between the concept and `not <concept>`), import the open batch's
    items that have no task yet, with the model's guess as a pre-annotation, and record the task
    ids in the campaign's `labelstudio.json`. Idempotent: a retry imports nothing twice. Without
    Label Studio it does nothing. Down or slow: retried with backoff, then fails naming the URL.

    Args:
        campaign_uri: the campaign (a round must be committed).
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        The project's URL ("" without Label Studio) and how many tasks of the open batch it holds.
    """
    from seals_al.storage import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.campaign import Campaign
    from seals_al.labelstudio import push_if_configured

    outputs = namedtuple("Outputs", ["project_url", "tasks"])
    pushed = push_if_configured(Campaign(campaign_uri, progress=False))
    if pushed is None:
        print("no Label Studio configured (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY): nothing pushed")
        return outputs("", 0)
    print(pushed.summary())
    return outputs(pushed.project_url, pushed.batch_tasks)
