"""Search the corpus with a round's model: score every item, or only the items not scored before,
and write them ranked.

    seals-al score CAMPAIGN --out scores.parquet [--new-only] [--round R] [--model MODEL.json]

The items are the campaign's data as it is now (:mod:`seals_al.prepared`: an item not embedded yet
is embedded first, with the campaign's encoder). The classifier runs in an Apache Beam pipeline
(RunInference; each worker loads the exported model once) over the stored embeddings, a chunk of
rows per element, and the driver ranks the scores::

    scores.parquet   id (string), score (float64, P(concept)), rank (int64, 1 = most likely)

plus, for each operating threshold of the model (:mod:`seals_al.export`), how many items score at
or above it. The campaign keeps what was scored (``scores/``: the ids' 64-bit hashes and the last
summary), so ``--new-only`` scores only items that arrived since.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from seals_al.beam_options import beam_options
from seals_al.errors import SealsError
from seals_al.export import ExportedModel, export_round, read_model, write_model
from seals_al.settings import EXPORT_PRECISIONS
from seals_al.storage import open_storage, split_uri

if TYPE_CHECKING:
    from seals_al.campaign import Campaign
    from seals_al.dataset import Dataset
    from seals_al.store import EmbeddingStore

CHUNK_ROWS = 262_144  # rows per element at most: Beam's cost per element is then negligible
SCORED_IDS = "scores/scored-ids.npy"  # uint64, sorted: the hashes of every item id scored so far
LAST_SUMMARY = "scores/last.json"


@dataclass(frozen=True)
class StoredScorer:
    """What a worker loads once: the exported classifier and the embeddings store, mapped."""

    model: ExportedModel
    store: EmbeddingStore

    def scores(self, start: int, stop: int) -> np.ndarray:
        """P(concept) of the rows at storage positions start..stop-1 (one shard's view: no copy)."""
        return self.model.predict_proba(self.store.block(start, stop))


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


def position_ranges(
    positions: np.ndarray, shard_starts: np.ndarray, chunk_rows: int
) -> list[tuple[int, int]]:
    """Sorted unique storage positions as ranges (start, stop) of consecutive positions, each
    inside one shard and at most ``chunk_rows`` long, in order."""
    positions = np.asarray(positions, np.int64)
    if not len(positions):
        return []
    # Where a run of consecutive positions ends: a gap, or a shard's end.
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    inner = np.searchsorted(positions, shard_starts[1:-1])
    cuts = np.unique(np.concatenate([[0], breaks, inner, [len(positions)]]))
    ranges = []
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        for lo in range(a, b, chunk_rows):
            hi = min(lo + chunk_rows, b)
            ranges.append((int(positions[lo]), int(positions[hi - 1]) + 1))
    return ranges


def score_positions(
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
        beam_args: Beam pipeline options (default: the in-process FnApiRunner).
        test_pipeline: a pipeline to run on instead (tests).

    Returns:
        float64 scores, one per position, in the order given.
    """
    from seals_al.store import EmbeddingStore

    positions = np.asarray(positions, np.int64)
    if len(positions) and np.any(np.diff(positions) <= 0):
        raise SealsError("score: storage positions must be sorted and unique")
    starts = EmbeddingStore.open(store_path).shard_starts
    ranges = list(enumerate(position_ranges(positions, starts, chunk_rows)))
    with test_pipeline or beam.Pipeline(options=beam_options(beam_args)) as p:
        _ = (
            p
            | "Ranges" >> beam.Create(ranges)
            | "Classify" >> RunInference(KeyedModelHandler(StoredEmbeddingsHandler(model_uri, store_path)))
            | "Write" >> beam.ParDo(WriteScores(work_dir))
        )
    parts = [np.load(Path(work_dir) / f"scores-{i:06d}.npy", allow_pickle=False) for i, _ in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def ranked(scores: np.ndarray) -> np.ndarray:
    """The order of items by score, highest first; ties keep item order (deterministic)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


@dataclass(frozen=True)
class ScoreSummary:
    """What one scoring did; ``counts`` has, per operating threshold, the items at or above it."""

    round: int
    concept: str
    items: int  # items in the data
    scored: int  # items scored this time
    new_only: bool
    out: str
    counts: list[dict]
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    def metric_values(self) -> dict[str, float]:
        """Scalar metrics for the pipeline UI: items scored, and items at each threshold."""
        values = {"items": float(self.items), "scored": float(self.scored)}
        for c in self.counts:
            if c["count"] is not None:
                values[f"items_at_precision_{c['precision']:g}"] = float(c["count"])
        return values

    def markdown(self) -> str:
        """The counts as a table, for a Markdown artifact."""
        scope = "items not scored before" if self.new_only else "every item"
        rows = [
            f"# {self.concept}: round {self.round} model over {scope}",
            "",
            f"Scored {self.scored:,} of {self.items:,} items; ranked in `{self.out}` (id, score, rank).",
            "",
            "| precision on the evaluation split | threshold on P(concept) | items at or above |",
            "|---|---|---|",
        ]
        for c in self.counts:
            if c["threshold"] is None:
                rows.append(f"| {c['precision']:g} | not reached | |")
            else:
                rows.append(f"| {c['precision']:g} | {c['threshold']:.4f} | {c['count']:,} |")
        if not self.counts:
            rows.append("| (no ground truth on the evaluation split: no thresholds) | | |")
        return "\n".join(rows) + "\n"

    def lines(self) -> list[str]:
        head = f"round {self.round} model: scored {self.scored:,} of {self.items:,} items"
        lines = [head + (" (new only)" if self.new_only else "") + f" in {self.seconds:.1f} s -> {self.out}"]
        for c in self.counts:
            if c["threshold"] is None:
                lines.append(
                    f"  precision {c['precision']:g}: no threshold reaches it on the evaluation split"
                )
            else:
                lines.append(
                    f"  precision {c['precision']:g} (P >= {c['threshold']:.4f}): {c['count']:,} items"
                )
        return lines


def score_campaign(
    campaign: Campaign,
    out: str,
    *,
    new_only: bool = False,
    r: int | None = None,
    model_uri: str | None = None,
    precisions: Sequence[float] = EXPORT_PRECISIONS,
    beam_args: Sequence[str] = (),
) -> ScoreSummary:
    """Score the campaign's items with a round's model and write them ranked to ``out``.

    Args:
        campaign: the campaign (its data, as it is now, is what is scored).
        out: the Parquet file to write (local path or gs://).
        new_only: score only items not scored by an earlier call.
        r: the round whose model scores (default: the newest trained); ignored with ``model_uri``.
        model_uri: an exported model to use instead of the campaign's.
        precisions: operating thresholds, when the campaign's model is exported here.
        beam_args: Beam pipeline options.

    Returns:
        What was scored and how many items are above each threshold.
    """
    started = time.perf_counter()
    model = read_model(model_uri) if model_uri else export_round(campaign, r, precisions)
    dataset = campaign.dataset()
    model.check_embedding(dataset.store, model_uri or campaign.storage.uri)
    items = np.setdiff1d(np.arange(dataset.prepared.count), dataset.removed_items)  # never tombstoned
    ids_hash = dataset.prepared.id_hashes()
    before = _scored_ids(campaign) if new_only else np.zeros(0, np.uint64)
    if new_only:
        items = items[~np.isin(ids_hash[items], before)]
    scores = _score(dataset, items, model, beam_args)
    order = ranked(scores)
    ids = dataset.prepared.ids_at(items[order])
    written = _write_parquet(out, ids, scores[order])
    counts = [
        {**t, "count": None if t["threshold"] is None else int((scores >= t["threshold"]).sum())}
        for t in model.thresholds
    ]
    summary = ScoreSummary(
        model.round,
        model.concept,
        dataset.prepared.count,
        len(items),
        new_only,
        written,
        counts,
        round(time.perf_counter() - started, 3),
    )
    _remember(campaign, np.union1d(before, ids_hash[items]), summary)
    return summary


def _score(dataset: Dataset, items: np.ndarray, model: ExportedModel, beam_args: Sequence[str]) -> np.ndarray:
    """The items' scores, in the order given (scored in storage order)."""
    if not len(items):
        return np.zeros(0, np.float64)
    positions = dataset.store.positions(dataset.prepared.row_ids_at(items))
    order = np.argsort(positions, kind="stable")
    with tempfile.TemporaryDirectory(prefix="seals-score-") as tmp:
        model_uri = write_model(model, str(Path(tmp) / "model.json"))
        work = Path(tmp) / "work"
        work.mkdir()
        scored = score_positions(
            str(dataset.store.path), positions[order], model_uri, str(work), beam_args=beam_args
        )
    scores = np.empty(len(items), np.float64)
    scores[order] = scored
    return scores


def _scored_ids(campaign: Campaign) -> np.ndarray:
    """The hashes of every id an earlier call scored (none before the first), read once."""
    st = campaign.storage
    if not st.exists(SCORED_IDS):
        return np.zeros(0, np.uint64)
    return _load_hashes(st.read_bytes(SCORED_IDS), st.where(SCORED_IDS))


def _load_hashes(data: bytes, where: str) -> np.ndarray:
    try:
        hashes = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise SealsError(f"{where}: not a .npy array of id hashes: {e}") from None
    if hashes.dtype != np.uint64 or hashes.ndim != 1:
        raise SealsError(f"{where}: expected a 1-d uint64 array, found {hashes.dtype} {hashes.shape}")
    return hashes


def _remember(campaign: Campaign, scored: np.ndarray, summary: ScoreSummary) -> None:
    """Record the ids scored so far (sorted, unique hashes) and the summary."""
    st = campaign.storage
    buffer = io.BytesIO()
    np.save(buffer, np.unique(scored), allow_pickle=False)
    st.write_bytes(SCORED_IDS, buffer.getvalue())
    st.write_json(LAST_SUMMARY, summary.to_json())


def _write_parquet(out: str, ids: list[str], scores: np.ndarray) -> str:
    """The ranked table, written whole then published in one step; returns where it is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "score": pa.array(scores, pa.float64()),
            "rank": pa.array(np.arange(1, len(ids) + 1, dtype=np.int64)),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    parent, name = split_uri(out)
    storage = open_storage(parent)
    storage.write_bytes(name, buffer.getvalue())
    return storage.where(name)


def read_scores(uri: str) -> dict[str, Any]:
    """A scores file as columns (for tests and notebooks): id, score, rank."""
    import pyarrow.parquet as pq

    parent, name = split_uri(uri)
    table = pq.read_table(io.BytesIO(open_storage(parent).read_bytes(name)))
    return {name: table.column(name).to_pylist() for name in table.column_names}
