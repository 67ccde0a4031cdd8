"""The data commands: embed items into a store, build its index (and neighbour graph)."""

from __future__ import annotations

import argparse

from rich.console import Console

from seals_al.errors import SealsError
from seals_al.settings import (
    DEFAULT_FACTORY,
    DEFAULT_K,
    DEFAULT_NPROBE,
    LAYOUTS,
)


def add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed items with the Apache Beam pipeline into an embeddings store",
        description="Runs seals_al.embed_pipeline: --input GLOB --output STORE [--id_column id] "
        "[--text_column text] [--shard_rows N] [--work_dir DIR] and any Beam option (--runner, "
        "--direct_num_workers, Dataflow/Flink/Spark flags). Unknown options are an error.",
    )
    p.set_defaults(handler=_embed)


def _embed(args: argparse.Namespace, console: Console) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from seals_al.embed.pipeline import EmbedOptions, run

    manifest = run(args.beam_args)
    extra = manifest.get("extra", {})
    output = PipelineOptions(args.beam_args).view_as(EmbedOptions).output
    console.print(
        f"{extra.get('embedded', 0):,} embedded, {extra.get('dead_letter', 0):,} dead-lettered "
        f"(see dead_letter.jsonl): {output}",
        highlight=False,
    )
    return 0


def add_build_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-index",
        help="build a faiss index over an embeddings store, with measured recall",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Beam options after the known ones (e.g. --runner=DataflowRunner --project=... or "
        "--direct_num_workers=2 --direct_running_mode=multi_processing) train and fill an IVF index "
        "on Beam workers, which read the store where it is published, and run the graph's queries "
        "(--graph-k) on them; without any, both run in this process.",
    )
    p.add_argument("store", help="an embeddings store (a folder or gs://bucket/prefix)")
    p.add_argument("out", help="the index folder to publish (a folder or gs://bucket/prefix)")
    p.add_argument(
        "--factory", default=DEFAULT_FACTORY, help="faiss index_factory string, e.g. IVF4096,PQ32 or HNSW32"
    )
    p.add_argument("--layout", default="single", choices=LAYOUTS)
    p.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per shard (ondisk, shards)")
    p.add_argument("--train-size", type=int, default=100_000, help="rows sampled to train IVF/PQ")
    p.add_argument("--nprobe", type=int, help=f"IVF lists probed per query (default {DEFAULT_NPROBE})")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth")
    p.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@k (0: skip)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="the k of recall@k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--graph-k",
        type=int,
        help="also build the neighbour graph of every row for this k (a campaign's k), its queries "
        "on Beam workers (in this process without Beam options), where a round over this index "
        "finds it: under a gs:// index's graphs/, or this machine's cache",
    )
    p.set_defaults(handler=_build_index)


def _build_index(args: argparse.Namespace, console: Console) -> int:
    from seals_al.index.directory import INDEX_FORMAT, publish_index_dir
    from seals_al.published import check_target, materialize
    from seals_al.store import EmbeddingStore

    for name in ("shard_rows", "train_size", "k"):
        if getattr(args, name) < 1:
            raise SealsError(f"--{name.replace('_', '-')} must be at least 1")
    if args.graph_k is not None and args.graph_k < 1:
        raise SealsError("--graph-k must be at least 1")
    beam_args = args.beam_args or None  # with any, the index is trained and filled on Beam workers
    if beam_args:  # checked before the index is built: a typo fails now, not after it
        from seals_al.beam_options import beam_options

        beam_options(beam_args)
    params = {k: v for k, v in (("nprobe", args.nprobe), ("efSearch", args.ef_search)) if v is not None}
    check_target(args.out, INDEX_FORMAT)  # before the store is fetched
    if beam_args:  # the workers read the store where it is published; this process, its row ids
        store = EmbeddingStore.published(args.store)  # a factory they cannot fill: refused before work
    else:
        store = EmbeddingStore.open(materialize(args.store, "an embeddings store"))
    manifest = publish_index_dir(
        store,
        args.out,
        args.factory,
        layout=args.layout,
        shard_rows=args.shard_rows,
        train_size=args.train_size,
        search_params=params,
        recall_queries=args.recall_queries,
        k=args.k,
        seed=args.seed,
        beam_args=beam_args,
    )
    recall = manifest.get("recall")
    console.print(
        f"{manifest['factory']} ({manifest['layout']}) over {manifest['ntotal']:,} vectors in "
        f"{manifest['build_seconds']:.1f} s"
        + (
            f"; recall@{recall['k']} {recall['recall_at_k']:.4f} on {recall['queries']} queries, "
            f"{recall['query_ms']:.3f} ms/query"
            if recall
            else ""
        )
        + f"\npublished: {args.out}",
        highlight=False,
    )
    if args.graph_k is not None:
        from seals_al.index.graph_pipeline import publish_graph

        graph = publish_graph(args.out, args.store, args.graph_k, beam_args=args.beam_args)
        console.print(f"neighbour graph k={args.graph_k}: {graph}", highlight=False)
    return 0
