"""The embedding pipeline (Apache Beam): read items, RunInference with the encoder, write the
embeddings store with a dead-letter file.

    seals-al embed --input 'items-*.csv' --output STORE_DIR [Beam options]
    python -m seals_al.embed.pipeline --input ... --output ...   (the same, without the CLI)

Locally it runs in-process on the FnApiRunner (never the runner that downloads Prism); on a cluster
the same pipeline runs with standard Beam options, e.g. ``--runner DataflowRunner --project P
--region R --temp_location gs://B/tmp --sdk_container_image IMAGE`` or ``--runner FlinkRunner
--flink_master HOST:8081 --environment_type DOCKER --environment_config IMAGE``.

Items are read a file at a time (CSV with a header, JSONL or Parquet; local or gs://), so many
input files spread over workers. Each worker loads the model once and embeds batches; items that
cannot be embedded (empty text, inference errors) go to ``dead_letter.jsonl`` with the reason and
never fail the job. Workers write shards of vectors; the driver then assigns each item a stable
row id (its rank in the sorted ids) and publishes the store atomically with a manifest that counts
embedded and dead-lettered items.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
from collections.abc import Sequence
from contextlib import ExitStack

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from seals_al.beam_options import beam_options, runner_options, workers_see_this_disk
from seals_al.embed.handlers import EfficientNetLiteHandler, MiniLMHandler
from seals_al.embed.transforms import (
    DEAD,
    EmbedItems,
    LoadImage,
    ReadItems,
    SkipKnown,
    WriteLines,
    WriteShards,
)
from seals_al.encoder import IMAGE_MODEL, IMAGE_MODEL_DIM, TEXT_MODEL, TEXT_MODEL_DIM
from seals_al.errors import EXIT_USAGE, SealsError, shown
from seals_al.items import item_files
from seals_al.published import check_target, output_folder, read_manifest_at
from seals_al.storage import open_storage, work_folder
from seals_al.storage.uris import is_remote
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import EmbeddingStore
from seals_al.store_writer import StoreWriter


class EmbedOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        # Not argparse-required: Beam parses every registered options class for every pipeline.
        parser.add_argument("--input", help="item files: a path or glob, local or gs:// (required)")
        parser.add_argument("--output", help="the embeddings store directory to write (required)")
        parser.add_argument("--modality", default="text", choices=["text", "image"])
        parser.add_argument("--id_column", default="id")
        parser.add_argument(
            "--text_column", default="text", help="the text (text) or image URI (image) column"
        )
        parser.add_argument("--shard_rows", type=int, default=100_000, help="vectors per shard file at most")
        parser.add_argument("--work_dir", help="where workers write parts (default: OUTPUT.parts)")


def build(p: beam.Pipeline, options: EmbedOptions, work_dir: str, known_uri: str | None = None):
    """Wire the pipeline on ``p``; returns the (parts, dead letters) PCollections. With
    ``known_uri`` (a file of ids, one JSON string per line), items with those ids are skipped: an
    append."""
    parsed = p | "Read" >> ReadItems(options.input, options.id_column, options.text_column)
    dead_inputs = [parsed[DEAD]]
    items = parsed.items
    if known_uri is not None:
        items = items | "SkipKnown" >> beam.ParDo(SkipKnown(known_uri))
    if options.modality == "image":
        images = items | "LoadImages" >> beam.ParDo(LoadImage()).with_outputs(DEAD, main="images")
        dead_inputs.append(images[DEAD])
        embedded = images.images | "Embed" >> EmbedItems(EfficientNetLiteHandler())
    else:
        embedded = items | "Embed" >> EmbedItems(MiniLMHandler())
    parts = (
        embedded["embedded"]
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=options.shard_rows)
        | "WriteShards" >> beam.ParDo(WriteShards(work_dir))
    )
    dead = (*dead_inputs, embedded[DEAD]) | "AllDead" >> beam.Flatten()
    (dead | "DeadJson" >> beam.Map(json.dumps) | "WriteDead" >> beam.ParDo(WriteLines(work_dir, "dead")))
    return parts, dead


def finalize(
    work_dir: str,
    output: str,
    model: str = TEXT_MODEL,
    dim: int = TEXT_MODEL_DIM,
    source: dict | None = None,
    base: EmbeddingStore | None = None,
    shard_rows: int = 100_000,
) -> None:
    """Assemble the workers' parts (local or gs://) into a local store, then remove the parts.

    The row id of an item is the rank of its id in sorted order: stable whatever the sharding.
    The rows are written in that order, each part's rows where they go, so a row's row id is its
    position (a reader finds a row with no lookup, on disk or on gs://). With ``base`` (an append)
    the base store's shards come first, hard-linked, with their row ids, and the new items' row
    ids follow the base's largest, in the order of their ids.
    """
    from apache_beam.io.filesystems import FileSystems

    def matching(pattern: str) -> list[str]:
        return sorted(m.path for m in FileSystems.match([f"{work_dir}/{pattern}"])[0].metadata_list)

    def read(path: str) -> bytes:
        with FileSystems.open(path) as f:
            return f.read()

    parts = matching("part-*.npy")
    part_ids = [json.loads(read(path[: -len(".npy")] + ".ids.json")) for path in parts]
    all_ids = [i for ids in part_ids for i in ids]
    if len(set(all_ids)) != len(all_ids):
        raise SealsError(f"{work_dir}: an id was embedded twice; ids must be unique across the input")
    first = 0 if base is None or not len(base) else int(base.row_ids.max()) + 1
    rank = {item: first + r for r, item in enumerate(sorted(all_ids))}
    dead = [line for path in matching("dead*.jsonl") for line in read(path).decode().splitlines() if line]
    reasons: dict[str, int] = {}
    for line in dead:
        reason = json.loads(line)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    extra = {"embedded": len(all_ids), "dead_letter": len(dead), "dead_letter_reasons": reasons}
    if source is not None:
        extra["source"] = source
    if base is not None:
        extra |= {"appended_to": base.digest(), "appended": len(all_ids), "base_count": len(base)}
    in_order = sorted(all_ids)

    def scattered():  # one part in memory at a time
        for path, ids in zip(parts, part_ids, strict=True):
            vectors = np.load(io.BytesIO(read(path)), allow_pickle=False)
            yield np.asarray([rank[i] - first for i in ids], dtype=np.int64), vectors

    with StoreWriter(output, dim=dim, model=model, normalized=True, extra=extra) as writer:
        if base is not None:
            writer.add_store(base)
        rows = np.arange(first, first + len(in_order), dtype=np.int64)
        writer.add_scattered(in_order, rows, scattered(), max(1, shard_rows))
        writer.add_file("dead_letter.jsonl", "".join(line + "\n" for line in dead).encode())
    if is_remote(work_dir):  # each part (Beam's own delete of a gs:// prefix takes the batch API)
        parts = open_storage(work_dir)
        for key in parts.list():
            parts.delete(key)
    else:
        FileSystems.delete([work_dir])


def _log_counters(result: beam.runners.runner.PipelineResult) -> None:
    """Log the pipeline's counters (the same numbers a runner's UI shows while it runs)."""
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("seals"))["counters"]
    for counter in counters:
        logging.getLogger(__name__).info("%s: %s", counter.key.metric.name, counter.committed)


def run(
    argv: Sequence[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    *,
    source: dict | None = None,
    base: EmbeddingStore | None = None,
) -> dict:
    """Run the embedding pipeline and publish the store (a local folder, or gs:// through
    :mod:`seals_al.published`); Beam options pass through.

    ``source`` (what the store was made from) is recorded in the manifest; see ensure_embeddings.
    ``base``: a store to append to: only items whose ids it lacks are embedded, and the published
    store holds its rows (same row ids) and then the new ones.

    Returns:
        The store's manifest.
    """
    options = beam_options(argv)
    embed = options.view_as(EmbedOptions)
    missing = [f"--{name}" for name in ("input", "output") if not getattr(embed, name)]
    if missing:
        raise SealsError(f"missing required option(s): {', '.join(missing)}")
    # Checked before embedding, not after: a gs:// output is written locally, then published.
    with output_folder(embed.output, STORE_FORMAT) as out, ExitStack() as stack:
        work_dir = embed.work_dir or f"{out}.parts"
        if not embed.work_dir and is_remote(embed.output) and not workers_see_this_disk(options):
            # workers elsewhere write their parts beside the store (removed once it is published)
            work_dir = stack.enter_context(work_folder(f"{embed.output.rstrip('/')}.parts"))
        runner_options(argv or (), {"the items": embed.input, "the work folder": work_dir})
        known_uri = None
        if base is not None:  # the ids to skip, beside the parts (read once per worker)
            from apache_beam.io.filesystems import FileSystems

            known_uri = f"{work_dir}/known-ids.txt"
            with FileSystems.create(known_uri) as f:
                f.write("".join(json.dumps(i) + "\n" for i in base.ids).encode())
        p = test_pipeline or beam.Pipeline(options=options)
        build(p, embed, work_dir, known_uri)
        result = p.run()
        result.wait_until_finish()
        _log_counters(result)
        if embed.modality == "image":
            finalize(work_dir, str(out), IMAGE_MODEL, IMAGE_MODEL_DIM, source, base, embed.shard_rows)
        else:
            finalize(work_dir, str(out), source=source, base=base, shard_rows=embed.shard_rows)
        manifest = json.loads((out / "manifest.json").read_text())
    return manifest


def ensure_embeddings(
    items: str,
    output: str,
    *,
    id_column: str = "id",
    text_column: str = "text",
    modality: str = "text",
    beam_args: Sequence[str] = (),
) -> tuple[dict, bool]:
    """Embed the items into ``output`` (a local folder or gs://) unless a store made from the same
    file (sha256), columns, modality and model is already there (re-runs of a pipeline skip the
    work; only the manifest is read to decide).

    Returns:
        (the store's manifest, whether it was already there).
    """
    from apache_beam.io.filesystems import FileSystems

    check_target(output, STORE_FORMAT)  # a bad output fails before reading or embedding

    def sha256(uri: str) -> str:
        digest = hashlib.sha256()
        with FileSystems.open(uri, compression_type="uncompressed") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    files = item_files(items)
    if files == [items]:
        content = sha256(items)
    else:  # a folder or glob: every file's name and content
        content = hashlib.sha256("".join(f"{uri}\t{sha256(uri)}\n" for uri in files).encode()).hexdigest()
    model = IMAGE_MODEL if modality == "image" else TEXT_MODEL
    source = {
        "items": items,
        "sha256": content,
        "id_column": id_column,
        "text_column": text_column,
        "modality": modality,
        "model": model,
    }
    manifest = read_manifest_at(output, STORE_FORMAT)
    if manifest is not None and manifest.get("extra", {}).get("source") == source:
        return manifest, True
    base = _appendable(manifest, source, output, files, id_column)
    argv = [
        f"--input={items}",
        f"--output={output}",
        f"--id_column={id_column}",
        f"--text_column={text_column}",
        f"--modality={modality}",
        *beam_args,
    ]
    return run(argv, source=source, base=base), False


def _appendable(
    manifest: dict | None, source: dict, output: str, files: list[str], id_column: str
) -> EmbeddingStore | None:
    """The store published at ``output``, when the new items only add to what it was made from:
    the same columns, modality and model, and every id it holds still among the items (their ids
    are read here, one file at a time). Then only the new items are embedded and appended. Else
    None: the items are embedded whole (items left, or the store is of other settings).

    An item's text is taken as unchanged on this path: the store keeps vectors, not texts (the
    local path, :func:`seals_al.preparing.prepare`, compares them)."""
    from seals_al.items import read_items
    from seals_al.published import materialize
    from seals_al.storage import local_file
    from seals_al.storage.uris import default_cache_dir

    if manifest is None:
        return None
    made_from = manifest.get("extra", {}).get("source") or {}
    same = ("id_column", "text_column", "modality", "model")
    if any(made_from.get(key) != source[key] for key in same):
        return None
    cache = default_cache_dir()
    ids: dict[str, str] = {}
    for uri in files:
        for item_id in read_items(local_file(uri, cache), [id_column], id_column)[id_column]:
            other = ids.setdefault(item_id, uri)
            if other != uri:
                raise SealsError(f"{uri}: id {shown(item_id)} is also in {other}; ids must be unique")
    base = EmbeddingStore.open(materialize(output, "an embeddings store", cache))
    return base if ids.keys() >= set(base.ids) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline from the command line: a bad option or input is one line on stderr and
    exit code 2, as with ``seals-al``."""
    logging.basicConfig(level=logging.INFO)
    try:
        manifest = run(sys.argv[1:] if argv is None else argv)
    except SealsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{manifest.get('extra', {}).get('embedded', 0):,} embedded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
