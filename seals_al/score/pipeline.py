"""The classifier over stored embeddings as an Apache Beam pipeline: RunInference over ranges of
storage positions, each worker loading the exported model (JSON) and opening the store once, each
range's scores written to a work folder the driver reads back in order.

Workers read the store, the model and the work folder by URI: on gs:// (a published store, a
gs:// campaign's work folder) they may run anywhere, on any runner, each reading only its ranges
of the store; with anything local, only where that is, on Beam's local runners (another is
refused before anything runs, naming the path: :func:`seals_al.beam_options.runner_options`). In
one process :func:`.stored.score_in_process` is faster (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from seals_al.beam_options import runner_options
from seals_al.export import read_model
from seals_al.score.stored import CHUNK_ROWS, StoredScorer, checked_positions, position_ranges


class StoredEmbeddingsHandler(ModelHandler[tuple[int, int], PredictionResult, StoredScorer]):
    """RunInference over stored embeddings: an example is a range of storage positions inside one
    shard, its inference those rows' P(concept). The model (JSON) and the store are opened once per
    worker, and no vector crosses a stage boundary: each range is read where it is scored."""

    def __init__(self, model_uri: str, store_uri: str):
        super().__init__()
        self.model_uri = model_uri
        self.store_uri = store_uri

    def load_model(self) -> StoredScorer:
        from seals_al.folders import open_published
        from seals_al.storage.uris import is_remote
        from seals_al.store import EmbeddingStore

        # gs://: read where it is, only this worker's ranges; a local store: mapped.
        folder = open_published(self.store_uri, "an embeddings store")
        access = "rows" if is_remote(self.store_uri) else "mapped"
        return StoredScorer(read_model(self.model_uri), EmbeddingStore.open(folder, access=access))

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

    def setup(self) -> None:
        from seals_al.storage import open_storage

        self.out = open_storage(self.work_dir)

    def process(self, element: tuple[int, PredictionResult]) -> Iterator[int]:
        number, result = element
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(result.inference, dtype=np.float64), allow_pickle=False)
        self.out.write_bytes(_part(number), buffer.getvalue())
        self.rows.inc(len(result.inference))
        yield number


def _part(number: int) -> str:
    return f"scores-{number:06d}.npy"


def score_with_beam(
    store_uri: str,
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
        store_uri: the embeddings store (a folder, or a published gs:// store).
        positions: sorted, unique storage positions to score.
        model_uri: an exported model (JSON) each worker loads (a path or gs://).
        work_dir: an empty folder (or gs:// prefix) where workers write each range's scores.
        chunk_rows: the most rows in one element.
        beam_args: Beam pipeline options (default: the in-process FnApiRunner); a runner whose
            workers may run elsewhere needs the store, the model and the work folder on gs://.
        test_pipeline: a pipeline to run on instead (tests).

    Returns:
        float64 scores, one per position, in the order given.
    """
    from seals_al.storage import open_storage
    from seals_al.store import EmbeddingStore

    positions = checked_positions(positions)
    options = runner_options(
        beam_args, {"the store": store_uri, "the model": model_uri, "the work folder": work_dir}
    )
    starts = EmbeddingStore.published(store_uri).shard_starts
    ranges = list(enumerate(position_ranges(positions, starts, chunk_rows)))
    with test_pipeline or beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Ranges" >> beam.Create(ranges)
            | "Classify" >> RunInference(KeyedModelHandler(StoredEmbeddingsHandler(model_uri, store_uri)))
            | "Write" >> beam.ParDo(WriteScores(work_dir))
        )
    parts = open_storage(work_dir)
    scores = [np.load(io.BytesIO(parts.read_bytes(_part(i))), allow_pickle=False) for i, _ in ranges]
    return np.concatenate(scores) if scores else np.zeros(0, np.float64)
