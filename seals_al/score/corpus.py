"""Search the corpus with a round's model: score every item, or only the items not scored before,
and write them ranked.

    seals-al score CAMPAIGN --out scores.parquet [--new-only] [--round R] [--model MODEL.json]

The items are the campaign's data as it is now (:mod:`seals_al.prepared`: an item not embedded yet
is embedded first, with the campaign's encoder). The classifier then runs over the stored
embeddings in this process (:func:`.stored.score_in_process`), or, when Beam pipeline options are
given, in an Apache Beam pipeline (:func:`.pipeline.score_with_beam`: RunInference): on any runner
for a campaign on gs:// over a published store (its workers read their ranges of the store, the
model and their work folder there), on Beam's local runners otherwise.

The driver then ranks the scores::

    scores.parquet   id (string), score (float64, P(concept)), rank (int64, 1 = most likely)

plus, for each operating threshold of the model (:mod:`seals_al.export`), how many items score at
or above it. The campaign keeps what was scored (``scores/``: the ids' 64-bit hashes and the last
summary), so ``--new-only`` scores only items that arrived since.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from seals_al.arrays import sorted_unique
from seals_al.errors import SealsError
from seals_al.export import ExportedModel, export_round, read_model, write_model
from seals_al.score.stored import score_in_process
from seals_al.settings import EXPORT_PRECISIONS
from seals_al.storage import open_storage
from seals_al.storage.uris import split_uri

if TYPE_CHECKING:
    from seals_al.campaign import Campaign

SCORED_IDS = "scores/scored-ids.npy"  # uint64, sorted: the hashes of every item id scored so far
LAST_SUMMARY = "scores/last.json"
SCORES_FORMAT = "seals-scores/1"  # in the Parquet schema's metadata of every scores file written


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
    engine: str  # "in-process" or "beam": what scored the stored embeddings

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
        head += " (new only)" if self.new_only else ""
        head += (
            f" in {self.seconds:.1f} s ({'Beam pipeline' if self.engine == 'beam' else 'in this process'})"
        )
        lines = [f"{head} -> {self.out}"]
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
        beam_args: Beam pipeline options; with any, the stored embeddings are scored by a Beam
            pipeline (RunInference), without, in this process.

    Returns:
        What was scored and how many items are above each threshold.
    """
    started = time.perf_counter()
    if beam_args:  # a runner whose workers cannot see the work folder is refused before any work
        from seals_al.beam_options import runner_options

        runner_options(beam_args, {"the campaign": campaign.storage.uri})
    model = read_model(model_uri) if model_uri else export_round(campaign, r, precisions)
    if model.concept != campaign.config.concept:
        raise SealsError(
            f"{model_uri}: a model of concept {model.concept!r}, the campaign's is "
            f"{campaign.config.concept!r}; score with a model of this campaign's concept"
        )
    dataset = campaign.dataset()
    model.check_embedding(dataset.store, model_uri or campaign.storage.uri)
    keep = np.ones(dataset.prepared.count, bool)
    keep[dataset.removed_items] = False  # never tombstoned
    items = np.flatnonzero(keep)
    ids_hash = dataset.prepared.id_hashes()
    before = _scored_ids(campaign) if new_only else np.zeros(0, np.uint64)
    if new_only:
        items = items[~_among(ids_hash[items], before)]
    scores = _score(campaign, items, model, beam_args)
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
        "beam" if beam_args else "in-process",
    )
    _remember(campaign, sorted_unique(np.concatenate([before, ids_hash[items]])), summary)
    return summary


def _score(
    campaign: Campaign, items: np.ndarray, model: ExportedModel, beam_args: Sequence[str]
) -> np.ndarray:
    """The items' scores, in the order given (scored in storage order): in this process, or by a
    Beam pipeline when Beam options are given."""
    from seals_al.storage import work_folder
    from seals_al.storage.uris import is_remote
    from seals_al.store import EmbeddingStore

    if not len(items):
        return np.zeros(0, np.float64)
    dataset = campaign.dataset()
    positions = dataset.store.positions(dataset.prepared.row_ids_at(items))
    order = np.argsort(positions, kind="stable")
    scores = np.empty(len(items), np.float64)
    if not beam_args:
        local = dataset.scan_store()  # scoring reads every row: a published store is copied here first
        store = EmbeddingStore.open(local.path, access="mapped")
        scores[order] = score_in_process(store, positions[order], model, progress=campaign.progress)
        return scores
    from seals_al.score.pipeline import score_with_beam  # imports Beam

    # Workers read a published store where it is (each its own ranges), else this machine's copy.
    store_uri = dataset.store.uri if is_remote(dataset.store.uri) else str(dataset.scan_store().path)
    # Under a gs:// campaign's scores/ every worker sees it; else a temporary folder here.
    with work_folder(campaign.storage.where("scores")) as work:
        model_uri = write_model(model, f"{work}/model.json")
        scores[order] = score_with_beam(store_uri, positions[order], model_uri, work, beam_args=beam_args)
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


def _among(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """True where a value is in the sorted, unique ``sorted_set`` (one binary search each)."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _remember(campaign: Campaign, scored: np.ndarray, summary: ScoreSummary) -> None:
    """Record the ids scored so far (sorted, unique hashes) and the summary."""
    st = campaign.storage
    buffer = io.BytesIO()
    np.save(buffer, scored, allow_pickle=False)
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
    pq.write_table(table.replace_schema_metadata({"format": SCORES_FORMAT}), buffer)
    parent, name = split_uri(out)
    storage = open_storage(parent)
    storage.write_bytes(name, buffer.getvalue())
    return storage.where(name)


def is_scores_file(data: bytes) -> bool:
    """Whether these bytes are a scores file ``score`` wrote (what ``score --out`` may replace):
    its schema says :data:`SCORES_FORMAT`, or (written before it did) its columns are exactly
    id, score and rank."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(pa.BufferReader(data))
    except (pa.ArrowException, OSError):
        return False
    marked = (schema.metadata or {}).get(b"format") == SCORES_FORMAT.encode()
    return marked or schema.names == ["id", "score", "rank"]


def read_scores(uri: str) -> dict[str, Any]:
    """A scores file as columns (for tests and notebooks): id, score, rank."""
    import pyarrow.parquet as pq

    parent, name = split_uri(uri)
    table = pq.read_table(io.BytesIO(open_storage(parent).read_bytes(name)))
    return {name: table.column(name).to_pylist() for name in table.column_names}
