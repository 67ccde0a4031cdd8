"""The simulation pipeline: the looped DAG with an oracle labeler instead of the wait."""

from kfp import dsl

from components.oracle_labeler.component import oracle_labeler
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
    SIMULATION_SPLIT_COLUMN,
    SIMULATION_TRUTH_COLUMN,
)

MAX_ROUNDS = 10


def oracle(cluster: Cluster):
    """The labeler of simulations: the oracle labels each open batch from the truth column."""

    def label(uri, r: int) -> dsl.PipelineTask:
        return cluster.step(oracle_labeler, campaign_uri=uri).set_display_name(f"round {r}: oracle labels")

    return label


def make_simulation(max_rounds: int = MAX_ROUNDS, cluster: Cluster = DEFAULT):
    """The simulation pipeline with ``max_rounds`` rounds (a compile-time constant)."""
    cluster = cluster.without_label_tool()  # the oracle labels: no person, no labeling tool

    @dsl.pipeline(
        pipeline_config=cluster.pipeline_config(),
        name="seals-simulation",
        description=f"SEALS simulated from ground truth, up to {max_rounds} rounds: seeds (5 + 95) and "
        "every batch labeled by an oracle reading the truth column. For demos, CI and studies.",
    )
    def seals_simulation(
        items_uri: str,
        campaign_uri: str,
        embeddings_uri: str,
        index_uri: str,
        concept: str,
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
        campaign = start_campaign(cluster, index, locals())
        rounds(cluster, campaign, max_rounds, oracle(cluster), target_metric, target_value)

    return seals_simulation


# seals_simulation: the pipeline with the default settings, built when first read.
__getattr__ = built_on_use("seals_simulation", make_simulation, globals())
