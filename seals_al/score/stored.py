"""The classifier over stored embeddings: the positions to score cut into ranges of consecutive
rows inside one shard, each range scored where it lies in its memory-mapped shard (nothing is
copied). :func:`score_in_process` runs them in this process; :mod:`.pipeline` runs the same
:class:`StoredScorer` in a Beam pipeline.

A linear classifier over stored rows is a matrix-vector product: in this process it runs within
6% of the same product over numpy's own memory map of the store, and about 10% of it over a
matrix already in RAM, while starting even the in-process Beam runner (0.1-0.2 s) takes longer
than scoring 1M rows (docs/BENCHMARKS.md, "Scoring throughput").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from seals_al.errors import SealsError
from seals_al.export import ExportedModel

if TYPE_CHECKING:
    from seals_al.store import EmbeddingStore

CHUNK_ROWS = 262_144  # rows scored in one call (one Beam element) at most: the cost per call is negligible


@dataclass(frozen=True)
class StoredScorer:
    """What scoring loads once (this process, or each Beam worker): the exported classifier and
    the embeddings store, mapped."""

    model: ExportedModel
    store: EmbeddingStore

    def scores(self, start: int, stop: int) -> np.ndarray:
        """P(concept) of the rows at storage positions start..stop-1 (one shard's view: no copy)."""
        return self.model.predict_proba(self.store.block(start, stop))


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


def score_in_process(
    store: EmbeddingStore,
    positions: np.ndarray,
    model: ExportedModel,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> np.ndarray:
    """P(concept) of the rows at these storage positions, in this process.

    Args:
        store: the embeddings store (open it ``mapped``: each range is then scored in place).
        positions: sorted, unique storage positions to score.
        model: the classifier.
        chunk_rows: the most rows scored in one call.
        progress: show a progress bar.

    Returns:
        float64 scores, one per position, in the order given.
    """
    positions = checked_positions(positions)
    scorer = StoredScorer(model, store)
    out = np.empty(len(positions), np.float64)
    done = 0
    with tqdm(total=len(positions), desc="scoring", unit="row", disable=not progress) as bar:
        for start, stop in position_ranges(positions, store.shard_starts, chunk_rows):
            out[done : done + stop - start] = scorer.scores(start, stop)
            done += stop - start
            bar.update(stop - start)
    return out


def checked_positions(positions: np.ndarray) -> np.ndarray:
    """Positions as int64; an error unless they are sorted and unique."""
    positions = np.asarray(positions, np.int64)
    if len(positions) and np.any(np.diff(positions) <= 0):
        raise SealsError("score: storage positions must be sorted and unique")
    return positions
