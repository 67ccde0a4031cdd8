"""build_index: a faiss index over U (the items outside the evaluation split) from a store."""

from typing import NamedTuple

from kfp import dsl

from components._base import seals_component


@seals_component
def build_index(
    items_uri: str,
    embeddings_uri: str,
    index_uri: str,
    index_metrics: dsl.Output[dsl.Metrics],
    factory: str = "Flat",
    nprobe: int = 16,
    layout: str = "single",
    train_size: int = 100000,
    recall_queries: int = 200,
    id_column: str = "id",
    split_column: str = "",
    eval_split: str = "test",
    graph_k: int = 0,
    beam_args: list = [],  # noqa: B006 (KFP reads the default from the signature)
    workspace: str = "",
) -> NamedTuple("Outputs", [("index_uri", str), ("skipped", bool)]):
    """Build the faiss index over U (items outside the evaluation split, so no evaluation item is ever a
    neighbour): IVF trained on a sample, vectors added shard by shard, optional on-disk merge;
    recall@100 against exact search is measured and logged. Reuses an index built from the same store,
    rows, factory and parameters.

    Args:
        items_uri: the item table (for the split column).
        embeddings_uri: the store from embed.
        index_uri: the index directory to publish.
        index_metrics: build seconds, vectors, recall@100, query ms.
        factory: faiss factory string: Flat, IVF{n},Flat, IVF{n},PQ{m}, HNSW{M}.
        nprobe: IVF lists probed per query (recorded and applied when opened).
        layout: single, ondisk (IVF lists merged on disk) or shards.
        train_size: rows sampled to train IVF/PQ.
        recall_queries: queries to measure recall@100 (0: skip).
        id_column: the external id column.
        split_column: the split column ("" when every item is in U).
        eval_split: the split held out for evaluation (never indexed, never selectable).
        graph_k: also build the neighbour graph of U for this k (the campaign's), where its first
            round finds it (0: leave it to that round, in its own pod).
        beam_args: Beam pipeline options that train and fill the index (IVF factories) and run
            the graph's queries on Beam workers, e.g. ["--runner=DataflowRunner", "--project=..."]
            (default: both in this pod).
        workspace: the run's shared workspace (KFP's workspace path), used as the cache of
            downloaded stores, indexes, graphs and prepared data; "" for a pod-local cache.

    Returns:
        index_uri, and whether an existing index was reused.
    """
    from seals_al.storage.uris import use_workspace

    use_workspace(workspace)
    from collections import namedtuple

    from seals_al.dataset import index_over_u

    manifest, skipped = index_over_u(
        items_uri,
        embeddings_uri,
        index_uri,
        factory,
        id_column=id_column,
        split_column=split_column or None,
        eval_split=eval_split,
        search_params={"nprobe": nprobe} if "IVF" in factory else {},
        layout=layout,
        train_size=train_size,
        recall_queries=recall_queries,
        beam_args=[str(a) for a in beam_args] or None,
    )
    if graph_k:
        from seals_al.dataset import graph_over_u

        graph_over_u(
            items_uri,
            embeddings_uri,
            index_uri,
            graph_k,
            id_column=id_column,
            split_column=split_column or None,
            eval_split=eval_split,
            beam_args=[str(a) for a in beam_args],
        )
    index_metrics.log_metric("vectors", manifest["ntotal"])
    index_metrics.log_metric("build_seconds", round(manifest["build_seconds"], 3))
    if "recall" in manifest:
        index_metrics.log_metric("recall_at_100", manifest["recall"]["recall_at_k"])
        index_metrics.log_metric("query_ms", manifest["recall"]["query_ms"])
    return namedtuple("Outputs", ["index_uri", "skipped"])(index_uri, skipped)
