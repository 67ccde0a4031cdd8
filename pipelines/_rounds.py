"""The wiring shared by the pipelines: embed + index once, then rounds unrolled at compile time.
Every task is made by :meth:`pipelines._cluster.Cluster.step` (workspace, resources, retries)."""

from collections.abc import Callable
from contextlib import ExitStack

from kfp import dsl

from components.build_index.component import build_index
from components.embed.component import embed
from components.init_campaign.component import init_campaign
from components.label_ingest.component import label_ingest
from components.label_push.component import label_push
from components.refresh_data.component import refresh_data
from components.report.component import report
from components.score.component import score
from components.select_round.component import select_round
from components.train.component import train
from pipelines._cluster import Cluster

Labeler = Callable[[dsl.pipeline_channel.PipelineChannel, int], dsl.PipelineTask]


def prepare(
    cluster: Cluster,
    items_uri, embeddings_uri, index_uri, id_column, text_column, split_column, eval_split, factory, nprobe,
    k,
) -> dsl.PipelineTask:  # fmt: skip
    """embed then build_index; both reuse what is already published, so re-runs skip them. With
    the cluster's Beam options, embed runs on that runner, and build_index builds the neighbour
    graph for k on it too (else the first round builds it in its own pod)."""
    beam_args = list(cluster.beam_args)
    embedded = cluster.step(
        embed,
        items_uri=items_uri,
        embeddings_uri=embeddings_uri,
        id_column=id_column,
        text_column=text_column,
        beam_args=beam_args,
    )
    return cluster.step(
        build_index,
        items_uri=items_uri,
        embeddings_uri=embedded.outputs["embeddings_uri"],
        index_uri=index_uri,
        factory=factory,
        nprobe=nprobe,
        id_column=id_column,
        split_column=split_column,
        eval_split=eval_split,
        graph_k=k if beam_args else 0,
        beam_args=beam_args,
    )


def start_campaign(cluster: Cluster, index: dsl.PipelineTask, parameters: dict, **overrides):
    """init_campaign after the index is built; returns the campaign URI every round reads.

    Args:
        cluster: the compile-time cluster settings.
        index: the build_index task (it publishes at the pipeline's ``index_uri``).
        parameters: the pipeline's parameters (its ``locals()``); those init_campaign takes are
            passed on by name, so the pipelines do not repeat the list.
        **overrides: arguments that differ from a same-named pipeline parameter.
    """
    # index_uri is the pipeline parameter, ordered by .after(index), not index.outputs[...]:
    # kfp.local (2.17.3) resolves a NamedTuple output passed into a ParallelFor to the loop item.
    names = set(init_campaign.component_spec.inputs) - {"workspace"}
    arguments = {k: v for k, v in parameters.items() if k in names} | overrides
    return cluster.step(init_campaign, **arguments).after(index).outputs["Output"]


def one_round(
    cluster: Cluster,
    campaign_uri, target_metric, target_value,
    r: int,
    after=None,
    gated: bool = False,
    score_corpus=None,
    score_new_only=None,
    refresh=None,
) -> dsl.PipelineTask:  # fmt: skip
    """label_ingest -> train -> select_round -> report for round r (and label_push after select,
    with the cluster's labeling tool Secret); returns the report task.

    ``refresh`` (a pipeline parameter, or None for no such step): the round starts with
    refresh_data, which when true embeds new items into the published store and adds them to
    the index (a step that always runs, and does nothing when false: a task outside a ``dsl.If``
    cannot wait for one inside it).

    ``gated``: train and the rest run only if the ingest staged new labels (one round per run).
    ``score_corpus`` (a pipeline parameter, or None for no such step): when true, the round ends by
    scoring the corpus with its model (``score_new_only``: only items not scored before).
    """
    ingested = cluster.step(label_ingest, campaign_uri=campaign_uri)
    ingested.set_display_name(f"round {r}: label ingest")
    first = ingested
    if refresh is not None:
        first = cluster.step(refresh_data, campaign_uri=campaign_uri, enabled=refresh)
        first.set_display_name(f"round {r}: refresh data")
        ingested.after(first)
    if after is not None:
        first.after(after)
    with ExitStack() as gate:
        if gated:
            gate.enter_context(dsl.If(ingested.output == True, name="new-labels"))  # noqa: E712
        trained = cluster.step(train, campaign_uri=campaign_uri).after(ingested)
        selected = cluster.step(select_round, campaign_uri=campaign_uri).after(trained)
        reported = cluster.step(
            report, campaign_uri=campaign_uri, target_metric=target_metric, target_value=target_value
        ).after(selected)
        trained.set_display_name(f"round {r}: train")
        selected.set_display_name(f"round {r}: select")
        reported.set_display_name(f"round {r}: report")
        if score_corpus is not None:
            with dsl.If(score_corpus == True, name="score-corpus"):  # noqa: E712
                scored = cluster.step(
                    score,
                    campaign_uri=campaign_uri,
                    new_only=score_new_only,
                    beam_args=list(cluster.beam_args),
                )
                scored.after(reported).set_display_name(f"round {r}: score the corpus")
        if cluster.label_tool_secret:
            pushed = cluster.step(label_push, campaign_uri=campaign_uri).after(selected)
            pushed.set_display_name(f"round {r}: push to the labeling tool")
    return reported


def rounds(
    cluster: Cluster,
    campaign_uri, max_rounds: int, labeler: Labeler, target_metric, target_value,
    refresh=None,
) -> None:  # fmt: skip
    """Round 0 from the seeds; each later round runs inside dsl.If(the previous report says keep
    going), after the labeler (a person via wait_for_labels, or the oracle) brought labels back.
    ``refresh``: each later round refreshes the data first (see :func:`one_round`)."""
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    last = one_round(cluster, campaign_uri, target_metric, target_value, 0)
    with ExitStack() as nested:
        for r in range(1, max_rounds):
            keep_going = last.outputs["Output"] == True  # noqa: E712 (a pipeline condition)
            nested.enter_context(dsl.If(keep_going, name=f"round-{r}"))
            labels = labeler(campaign_uri, r).after(last)
            last = one_round(
                cluster, campaign_uri, target_metric, target_value, r, after=labels, refresh=refresh
            )
