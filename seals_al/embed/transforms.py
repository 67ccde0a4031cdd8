"""The Beam transforms of the embedding pipeline: read item files, load images, embed with
RunInference, write shards; every failure becomes a dead letter with its reason, never a failed job."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from seals_al.embed.handlers import MiniLMHandler
from seals_al.encoder import preprocess_image
from seals_al.errors import SealsError
from seals_al.items import item_files

DEAD = "dead"


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
    """Item files -> tagged outputs "items" ((id, text) pairs) and "dead". ``source``: a file, a
    folder or a glob (:func:`seals_al.items.item_files`), listed when the pipeline is built."""

    def __init__(self, source: str, id_column: str = "id", text_column: str = "text"):
        super().__init__()
        self.files = item_files(source)
        self.parse = ParseItems(id_column, text_column)

    def expand(self, pipeline):
        return (
            pipeline
            | "Files" >> beam.Create(self.files)
            | "Match" >> fileio.MatchAll()
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
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
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


class SkipKnown(beam.DoFn):
    """(id, text) pairs whose id is not in the store being appended to: only new items are
    embedded. The known ids (one JSON string per line at ``known_uri``) are read once per worker,
    as a model is, not shipped in the pipeline graph."""

    def __init__(self, known_uri: str):
        self.known_uri = known_uri
        self.skipped = beam.metrics.Metrics.counter("seals", "items_known")
        self._known: frozenset[str] = frozenset()

    def setup(self) -> None:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(self.known_uri, compression_type="uncompressed") as f:
            self._known = frozenset(json.loads(line) for line in f.read().decode().splitlines())

    def process(self, pair: tuple[str, str]) -> Iterator[tuple[str, str]]:
        if pair[0] in self._known:
            self.skipped.inc()
        else:
            yield pair


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
