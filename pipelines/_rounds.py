"""The wiring shared by the pipelines: embed + index once, then rounds unrolled at compile time."""

from collections.abc import Callable
from contextlib import ExitStack

from kfp import dsl

from components.build_index.component import build_index
from components.embed.component import embed
from components.init_campaign.component import init_campaign
from components.label_ingest.component import label_ingest
from components.report.component import report
from components.select_round.component import select_round
from components.train.component import train

Labeler = Callable[[dsl.pipeline_channel.PipelineChannel, int], dsl.PipelineTask]


def prepare(
    items_uri, embeddings_uri, index_uri, id_column, text_column, split_column, eval_split, factory, nprobe
) -> dsl.PipelineTask:
    """embed then build_index; both reuse what is already published, so re-runs skip them."""
    embedded = embed(
        items_uri=items_uri, embeddings_uri=embeddings_uri, id_column=id_column, text_column=text_column
    ).set_caching_options(False)
    return build_index(
        items_uri=items_uri,
        embeddings_uri=embedded.outputs["embeddings_uri"],
        index_uri=index_uri,
        factory=factory,
        nprobe=nprobe,
        id_column=id_column,
        split_column=split_column,
        eval_split=eval_split,
    ).set_caching_options(False)


def start_campaign(index: dsl.PipelineTask, parameters: dict, **overrides):
    """init_campaign after the index is built; returns the campaign URI every round reads.

    Args:
        index: the build_index task (it publishes at the pipeline's ``index_uri``).
        parameters: the pipeline's parameters (its ``locals()``); those init_campaign takes are
            passed on by name, so the pipelines do not repeat the list.
        **overrides: arguments that differ from a same-named pipeline parameter.
    """
    # index_uri is the pipeline parameter, ordered by .after(index), not index.outputs[...]:
    # kfp.local (2.17.3) resolves a NamedTuple output passed into a ParallelFor to the loop item.
    names = set(init_campaign.component_spec.inputs)
    arguments = {k: v for k, v in parameters.items() if k in names} | overrides
    return init_campaign(**arguments).after(index).set_caching_options(False).outputs["Output"]


def one_round(
    campaign_uri, target_metric, target_value, r: int, after=None, gated: bool = False
) -> dsl.PipelineTask:
    """label_ingest -> train -> select_round -> report for round r; returns the report task.

    ``gated``: train and the rest run only if the ingest staged new labels (one round per run).
    """
    ingested = label_ingest(campaign_uri=campaign_uri).set_display_name(f"round {r}: label ingest")
    ingested.set_caching_options(False)  # campaign steps read state that changes between runs
    if after is not None:
        ingested.after(after)
    with ExitStack() as gate:
        if gated:
            gate.enter_context(dsl.If(ingested.output == True, name="new-labels"))  # noqa: E712
        trained = train(campaign_uri=campaign_uri).after(ingested).set_display_name(f"round {r}: train")
        selected = select_round(campaign_uri=campaign_uri).after(trained)
        reported = report(campaign_uri=campaign_uri, target_metric=target_metric, target_value=target_value)
        reported.after(selected).set_display_name(f"round {r}: report")
        selected.set_display_name(f"round {r}: select")
        for task in (trained, selected, reported):
            task.set_caching_options(False)
    return reported


def rounds(campaign_uri, max_rounds: int, labeler: Labeler, target_metric, target_value) -> None:
    """Round 0 from the seeds; each later round runs inside dsl.If(the previous report says keep
    going), after the labeler (a person via wait_for_labels, or the oracle) brought labels back."""
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    last = one_round(campaign_uri, target_metric, target_value, 0)
    with ExitStack() as nested:
        for r in range(1, max_rounds):
            keep_going = last.outputs["Output"] == True  # noqa: E712 (a pipeline condition)
            nested.enter_context(dsl.If(keep_going, name=f"round-{r}"))
            labels = labeler(campaign_uri, r).after(last).set_caching_options(False)
            last = one_round(campaign_uri, target_metric, target_value, r, after=labels)
