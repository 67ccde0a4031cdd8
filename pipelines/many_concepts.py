"""Many concepts at once: one embed and one index, then one simulated campaign per concept in a
dsl.ParallelFor (the paper ran hundreds of concepts over the same index)."""

from kfp import dsl

from pipelines._cluster import DEFAULT, Cluster, built_on_use
from pipelines._rounds import prepare, rounds, start_campaign
from pipelines.simulation import oracle
from seals_al.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BUDGET,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_FACTORY,
    DEFAULT_K,
    DEFAULT_MODE,
    DEFAULT_STRATEGY,
    SIMULATION_SPLIT_COLUMN,
    SIMULATION_TRUTH_COLUMN,
)

MAX_ROUNDS = 5


def make_many_concepts(max_rounds: int = MAX_ROUNDS, parallelism: int = 4, cluster: Cluster = DEFAULT):
    """The many-concepts pipeline; campaigns go to ``campaign_root/<concept>``."""
    cluster = cluster.without_label_tool()  # the oracle labels: no person, no labeling tool

    @dsl.pipeline(
        pipeline_config=cluster.pipeline_config(),
        name="seals-many-concepts",
        description=f"One simulated SEALS campaign per concept (up to {max_rounds} rounds each), "
        "sharing one embedding store and one index.",
    )
    def seals_many_concepts(
        items_uri: str,
        campaign_root: str,
        embeddings_uri: str,
        index_uri: str,
        concepts: list,
        truth_column: str = SIMULATION_TRUTH_COLUMN,
        split_column: str = SIMULATION_SPLIT_COLUMN,
        eval_split: str = DEFAULT_EVAL_SPLIT,
        strategy: str = DEFAULT_STRATEGY,
        mode: str = DEFAULT_MODE,
        k: int = DEFAULT_K,
        batch_size: int = DEFAULT_BATCH_SIZE,
        budget: int = DEFAULT_BUDGET,
        seed: int = 0,
        id_column: str = "id",
        text_column: str = "text",
        index_factory: str = DEFAULT_FACTORY,
        nprobe: int = 16,
        target_metric: str = "",
        target_value: float = 1.0,
    ):
        index = prepare(
            cluster, items_uri, embeddings_uri, index_uri, id_column, text_column, split_column, eval_split,
            index_factory, nprobe, k,
        )  # fmt: skip
        with dsl.ParallelFor(concepts, parallelism=parallelism) as concept:
            campaign = start_campaign(
                cluster, index, locals(), campaign_uri=campaign_root, folder_per_concept=True
            )
            rounds(cluster, campaign, max_rounds, oracle(cluster), target_metric, target_value)

    return seals_many_concepts


# seals_many_concepts: the pipeline with the default settings, built when first read.
__getattr__ = built_on_use("seals_many_concepts", make_many_concepts, globals())
