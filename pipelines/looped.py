"""The looped pipeline: rounds unrolled at compile time, each waiting for people's labels."""

from kfp import dsl

from components.wait_for_labels.component import wait_for_labels
from pipelines._cluster import DEFAULT, Cluster, built_on_use
from pipelines._rounds import prepare, rounds, start_campaign
from seals_al.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BUDGET,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_FACTORY,
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_STRATEGY,
    WAIT_POLL_SECONDS,
    WAIT_TIMEOUT_SECONDS,
)

MAX_ROUNDS = 10


def make_looped(max_rounds: int = MAX_ROUNDS, cluster: Cluster = DEFAULT):
    """The looped pipeline with ``max_rounds`` rounds (a compile-time constant)."""

    @dsl.pipeline(
        pipeline_config=cluster.pipeline_config(),
        name="seals-looped",
        description=f"SEALS active learning, up to {max_rounds} rounds; each round publishes a batch "
        "and waits for labels in the campaign's inbox or in its labeling tool.",
    )
    def seals_looped(
        items_uri: str,
        campaign_uri: str,
        embeddings_uri: str,
        index_uri: str,
        concept: str,
        seed_labels_uri: str,
        strategy: str = DEFAULT_STRATEGY,
        mode: str = DEFAULT_MODE,
        k: int = DEFAULT_K,
        batch_size: int = DEFAULT_BATCH_SIZE,
        budget: int = DEFAULT_BUDGET,
        seed: int = 0,
        id_column: str = "id",
        text_column: str = "text",
        truth_column: str = "",
        split_column: str = "",
        eval_split: str = DEFAULT_EVAL_SPLIT,
        index_factory: str = DEFAULT_FACTORY,
        nprobe: int = 16,
        poll_seconds: float = WAIT_POLL_SECONDS,
        timeout_seconds: float = WAIT_TIMEOUT_SECONDS,
        target_metric: str = "",
        target_value: float = 1.0,
        labeled_fraction: float = 1.0,
        label_tool: str = "",
        label_tool_url: str = "",
        label_tool_project: str = "",
        removed_uri: str = "",
        train_on_removed: bool = False,
        refresh_data: bool = False,
    ):
        index = prepare(
            cluster, items_uri, embeddings_uri, index_uri, id_column, text_column, split_column, eval_split,
            index_factory, nprobe, k,
        )  # fmt: skip
        campaign_uri = start_campaign(cluster, index, locals())

        def wait(uri, r):
            return cluster.step(
                wait_for_labels,
                campaign_uri=uri,
                poll_seconds=poll_seconds,
                timeout_seconds=timeout_seconds,
                labeled_fraction=labeled_fraction,
            ).set_display_name(f"round {r}: wait for labels")

        rounds(cluster, campaign_uri, max_rounds, wait, target_metric, target_value, refresh=refresh_data)

    return seals_looped


# seals_looped: the pipeline with the default settings, built when first read.
__getattr__ = built_on_use("seals_looped", make_looped, globals())
