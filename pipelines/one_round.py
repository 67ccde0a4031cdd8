"""One round per run: for recurring runs and event triggers; no compute is held while people
label. With ``refresh_data``, first embed the items that arrived into the published store and
add them to the index; ingest new labels if any; if there were, train, select, publish and report, and
(with ``score_corpus``) score the corpus with the new model; then end."""

from kfp import dsl

from pipelines._cluster import DEFAULT, Cluster, built_on_use
from pipelines._rounds import one_round


def make_one_round(cluster: Cluster = DEFAULT):
    """The one-round pipeline with these cluster settings."""

    @dsl.pipeline(
        pipeline_config=cluster.pipeline_config(),
        name="seals-one-round",
        description="Advance an existing SEALS campaign by one round if new labels came back; "
        "a run with no new labels changes nothing.",
    )
    def seals_one_round(
        campaign_uri: str,
        target_metric: str = "",
        target_value: float = 1.0,
        score_corpus: bool = False,
        score_new_only: bool = True,
        refresh_data: bool = False,
    ):
        one_round(
            cluster,
            campaign_uri,
            target_metric,
            target_value,
            0,
            gated=True,
            score_corpus=score_corpus,
            score_new_only=score_new_only,
            refresh=refresh_data,
        )

    return seals_one_round


# seals_one_round: the pipeline with the default settings, built when first read.
__getattr__ = built_on_use("seals_one_round", make_one_round, globals())
