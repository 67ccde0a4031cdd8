"""The classifier over stored embeddings as an Apache Beam pipeline: RunInference over ranges of
storage positions, each worker loading the exported model (JSON) and mapping the store once, each
range's scores written to a work folder the driver reads back in order.

The store it maps is the campaign's prepared data in this machine's cache, so its workers must run
here: Beam's local runners only (:data:`LOCAL_RUNNERS`; another is refused before anything runs).
In one process :func:`.stored.score_in_process` is faster (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from seals_al.beam_options import beam_options
from seals_al.errors import SealsError
from seals_al.export import read_model
from seals_al.score.stored import CHUNK_ROWS, StoredScorer, checked_positions, position_ranges

# Runners whose workers run on this machine, where the store's files are.
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


class StoredEmbeddingsHandler(ModelHandler[tuple[int, int], PredictionResult, StoredScorer]):
    """RunInference over stored embeddings: an example is a range of storage positions inside one
    shard, its inference those rows' P(concept). The model (JSON) and the store are opened once per
    worker, and no vector crosses a stage boundary: each range is read where it is scored."""

    def __init__(self, model_uri: str, store_path: str):
        super().__init__()
        self.model_uri = model_uri
        self.store_path = store_path

    def load_model(self) -> StoredScorer:
        from seals_al.store import EmbeddingStore

        return StoredScorer(read_model(self.model_uri), EmbeddingStore.open(self.store_path, access="mapped"))

    def run_inference(
        self, batch: Sequence[tuple[int, int]], model: StoredScorer, inference_args: dict | None = None
    ) -> list[PredictionResult]:
        return [PredictionResult(example, model.scores(*example)) for example in batch]

    def batch_elements_kwargs(self) -> dict:
        return {"min_batch_size": 1, "max_batch_size": 1}  # an example is a whole range already


class WriteScores(beam.DoFn):
    """(range number, PredictionResult) -> ``scores-NNNNNN.npy`` in the work directory."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.rows = beam.metrics.Metrics.counter("seals", "rows_scored")

    def process(self, element: tuple[int, PredictionResult]) -> Iterator[int]:
        from apache_beam.io.filesystems import FileSystems

        number, result = element
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(result.inference, dtype=np.float64), allow_pickle=False)
        with FileSystems.create(f"{self.work_dir}/scores-{number:06d}.npy") as f:
            f.write(buffer.getvalue())
        self.rows.inc(len(result.inference))
        yield number


def score_with_beam(
    store_path: str,
    positions: np.ndarray,
    model_uri: str,
    work_dir: str,
    *,
    chunk_rows: int = CHUNK_ROWS,
    beam_args: Sequence[str] = (),
    test_pipeline: beam.Pipeline | None = None,
) -> np.ndarray:
    """P(concept) of the rows at these storage positions, through the Beam pipeline.

    Args:
        store_path: the embeddings store.
        positions: sorted, unique storage positions to score.
        model_uri: an exported model (JSON) each worker loads.
        work_dir: an empty folder where workers write each range's scores.
        chunk_rows: the most rows in one element.
        beam_args: Beam pipeline options (default: the in-process FnApiRunner); the runner must be
            one of :data:`LOCAL_RUNNERS`.
        test_pipeline: a pipeline to run on instead (tests).

    Returns:
        float64 scores, one per position, in the order given.
    """
    from seals_al.store import EmbeddingStore

    positions = checked_positions(positions)
    options = local_options(beam_args)
    starts = EmbeddingStore.open(store_path).shard_starts
    ranges = list(enumerate(position_ranges(positions, starts, chunk_rows)))
    with test_pipeline or beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Ranges" >> beam.Create(ranges)
            | "Classify" >> RunInference(KeyedModelHandler(StoredEmbeddingsHandler(model_uri, store_path)))
            | "Write" >> beam.ParDo(WriteScores(work_dir))
        )
    parts = [np.load(Path(work_dir) / f"scores-{i:06d}.npy", allow_pickle=False) for i, _ in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def local_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options whose runner's workers run on this machine; else an error naming the runner."""
    options = beam_options(beam_args)
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    if name not in LOCAL_RUNNERS:
        raise SealsError(
            f"--runner {name}: scoring reads the embeddings from this machine's cache, so it runs on "
            f"Beam's local runners only ({', '.join(LOCAL_RUNNERS)}); without Beam options it scores "
            "in this process, faster"
        )
    return options
