"""The Beam transforms of the embedding pipeline: read item files, load images, embed with
RunInference, write shards; every failure becomes a dead letter with its reason, never a failed job."""

from __future__ import annotations

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
from seals_al.items import item_files, item_rows, row_unit

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
        """The file's rows by :func:`seals_al.items.item_rows`, the reader a round uses too: a row
        it finds unusable, or with an empty id or text, is a dead letter naming its line; a file
        it cannot read on is one dead letter for the rest of the file."""
        name = readable.metadata.path
        unit = row_unit(name)
        try:
            with readable.open() as raw:
                for number, values, problem in item_rows(name, raw, [self.id_column, self.text_column]):
                    self.read.inc()
                    item_id, text = values or (None, None)
                    if problem is None and not item_id.strip():
                        problem = f"missing {self.id_column!r}"
                    elif problem is None and not text.strip():
                        problem = f"empty {self.text_column!r}"
                    if problem is None:
                        yield item_id, text
                    else:
                        yield self._dead(item_id, f"{name}, {unit} {number}", problem)
        except SealsError as e:  # the file cannot be read on: what was read stands, the rest is one letter
            yield self._dead(None, name, f"{e}; the rest of the file was not read")

    def _dead(self, item_id: str | None, where: str, reason: str):
        self.rejected.inc()
        return beam.pvalue.TaggedOutput(
            DEAD, {"id": item_id.strip() or None if item_id else None, "where": where, "reason": reason}
        )


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


class WriteLines(beam.DoFn):
    """Lines -> one file of them per bundle, ``PREFIX-<random>.jsonl`` in a work directory, written
    whole by the worker that holds them: no temporary files renamed when the job ends (which on
    gs:// takes the storage batch API)."""

    def __init__(self, work_dir: str, prefix: str):
        self.work_dir, self.prefix = work_dir, prefix
        self._lines: list[str] = []

    def start_bundle(self) -> None:
        self._lines = []

    def process(self, line: str) -> None:
        self._lines.append(line)

    def finish_bundle(self) -> None:
        from apache_beam.io.filesystems import FileSystems

        if self._lines:
            with FileSystems.create(f"{self.work_dir}/{self.prefix}-{uuid.uuid4().hex}.jsonl") as f:
                f.write("".join(line + "\n" for line in self._lines).encode())
            self._lines = []


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
