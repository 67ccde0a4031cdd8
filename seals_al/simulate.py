"""Simulated campaigns: the round engine driven in one process, an oracle answering from the
ground-truth column. The driver of ``seals-al simulate``, the benchmarks and label-efficiency
studies; one prepared :class:`~seals_al.dataset.Dataset` serves any number of concepts,
strategies and modes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seals_al.dataset import Dataset
from seals_al.errors import SealsError, shown
from seals_al.items import Items, draw_seeds
from seals_al.round import RoundEngine
from seals_al.selection import Selection
from seals_al.settings import SEED_NEGATIVES, SEED_POSITIVES, DataConfig, RoundConfig, check_fits_u, to_flat
from seals_al.storage.files import check_output_folder, write_json_atomic, write_text_atomic, written_as


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated campaign (defaults follow the paper: 5 + 95 seeds, b = k = 100)."""

    concept: str
    learning: RoundConfig = field(default_factory=RoundConfig)
    seed_positives: int = SEED_POSITIVES
    seed_negatives: int = SEED_NEGATIVES
    rounds: int = 9  # selection rounds after the seed round


RoundCallback = Callable[[dict], None]


def check_simulation(items: Items, sim: SimulationConfig, data: DataConfig) -> None:
    """Fail early, before embedding, on an unknown concept, strategy or mode, too few seeds, or
    a k or IVF list count U cannot fill."""
    sim.learning.check(items.source)
    check_fits_u(data, sim.learning, int((~items.is_eval).sum()), items.source)
    if items.truth is None:
        raise SealsError(f"{items.source}: a simulation needs a truth column for its oracle")
    items.check_concept(sim.concept)
    positive = items.truth == sim.concept
    n_pos = int((positive & ~items.is_eval).sum())
    n_neg = int((~positive & ~items.is_eval).sum())
    if n_pos < sim.seed_positives:
        raise SealsError(
            f"{items.source}: concept {shown(sim.concept)} has {n_pos} positives outside the "
            f"{items.eval_split!r} split; the seed set needs {sim.seed_positives}"
        )
    if n_neg < sim.seed_negatives:
        raise SealsError(f"{items.source}: only {n_neg} negatives; the seed set needs {sim.seed_negatives}")
    if not (positive & items.is_eval).any():
        raise SealsError(
            f"{items.source}: concept {shown(sim.concept)} has no positives in the {items.eval_split!r} "
            "split, so average precision is undefined"
        )


def simulate(
    dataset: Dataset,
    sim: SimulationConfig,
    out_dir: str | Path | None = None,
    on_round: RoundCallback | None = None,
    progress: bool = True,
) -> dict:
    """Run one campaign with an oracle labeler.

    Round r trains on the labeled set, evaluates, then (for r < rounds) selects a batch that
    the oracle labels. The record of the last round has no selection.

    Args:
        dataset: the prepared items, embeddings and index.
        sim: the campaign settings.
        out_dir: where summary.json and rounds/NNN/selected.jsonl go (None: nowhere).
        on_round: called with each round's record (as JSON) as soon as it is known.
        progress: show progress bars for one-off work (kNN density of U).

    Returns:
        The summary: {"config": ..., "rounds": [records], "stopped": reason or None}.
    """
    check_simulation(dataset.items(), sim, dataset.config)
    engine = RoundEngine(dataset, sim.learning, sim.concept, progress)
    out = _prepare_out_dir(out_dir) if out_dir is not None else None
    seeds = draw_seeds(
        dataset.items(), sim.concept, sim.seed_positives, sim.seed_negatives, sim.learning.seed
    )
    labeled = dataset.row_ids_of([item for item, _ in seeds]).tolist()
    answers = [label for _, label in seeds]
    candidates = engine.candidates()
    candidates.exclude(np.asarray(labeled, dtype=np.int64))
    queries = candidates.queries  # the seeds' look-ups count towards round 0
    summary: dict = {"config": {**to_flat(dataset.config), **to_flat(sim)}, "rounds": [], "stopped": None}
    for r in range(sim.rounds + 1):
        model = engine.train(np.asarray(labeled), np.asarray(answers))
        evaluation = engine.evaluate(model, answers)
        want = sim.learning.batch_size if r < sim.rounds else 0
        outcome = engine.select(candidates, model, want, r)
        picked = np.asarray([p.row_id for p in outcome.selection.picks], dtype=np.int64)
        record = engine.record(r, evaluation, outcome, batch=len(picked), queries_before=queries).to_json()
        queries = 0
        if r < sim.rounds:
            truth = dataset.truth(sim.concept, picked).tolist() if len(picked) else []
            if out is not None:
                _write_selected(out, r, outcome.selection, truth, sim.learning.strategy, dataset)
            labeled.extend(picked.tolist())
            answers.extend(truth)
            if outcome.stopped:
                summary["stopped"] = outcome.stopped
            elif outcome.selection.exhausted and summary["stopped"] is None:
                summary["stopped"] = f"round {r}: the pool ran out after {len(picked)} of {want} picks"
        summary["rounds"].append(record)
        if out is not None:
            write_json_atomic(out / "summary.json", summary)
        if on_round is not None:
            on_round(record)
        if summary["stopped"] is not None and record["selected"] == 0:
            break
    return summary


def full_supervision_ap(dataset: Dataset, concept: str, C: float = 1.0, seed: int = 0) -> float:
    """AP of the same classifier trained on every label of U: the reference line."""
    engine = RoundEngine(dataset, RoundConfig(C=C, seed=seed), concept)
    y = dataset.truth(concept, dataset.u_rows)
    return engine.evaluate(engine.train(dataset.u_rows, y), y).average_precision


def check_out_dir(out_dir: str | Path) -> None:
    """An output directory is new, empty, or an earlier simulation's, which is replaced: it may hold
    nothing but what :func:`simulate` writes (summary.json, plot.png, rounds/NNN/selected.jsonl,
    and the temporary files of their atomic writes). Anything else there, a campaign for one, is
    refused and left as it was."""
    check_output_folder(Path(out_dir), _written_by_simulate, "simulation")


def _written_by_simulate(parts: tuple[str, ...], path: Path) -> bool:
    """Whether ``path`` (``parts`` under the output folder) is one of simulate's outputs."""

    def file_named(name: str, ours: str) -> bool:
        return path.is_file() and written_as(name, ours)

    if parts == ("rounds",) or (len(parts) == 2 and parts[0] == "rounds" and _round_folder(parts[1])):
        return path.is_dir()
    if len(parts) == 1:
        return file_named(parts[0], "summary.json") or file_named(parts[0], "plot.png")
    return (
        len(parts) == 3
        and parts[0] == "rounds"
        and _round_folder(parts[1])
        and file_named(parts[2], "selected.jsonl")
    )


def _round_folder(name: str) -> bool:
    return len(name) == 3 and name.isdigit()


def _prepare_out_dir(out_dir: str | Path) -> Path:
    check_out_dir(out_dir)
    out = Path(out_dir)
    if (out / "rounds").exists():
        shutil.rmtree(out / "rounds")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_selected(
    out: Path, r: int, selection: Selection, answers: list[int], strategy: str, dataset: Dataset
) -> None:
    rows = np.asarray([p.row_id for p in selection.picks], dtype=np.int64)
    sources = [p.reached_from for p in selection.picks]
    known_sources = np.asarray([s for s in sources if s is not None], dtype=np.int64)
    source_ids = iter(dataset.external_ids(known_sources)) if len(known_sources) else iter(())
    lines = []
    for pick, item_id, answer, source in zip(
        selection.picks, dataset.external_ids(rows) if len(rows) else [], answers, sources, strict=True
    ):
        lines.append(
            json.dumps(
                {
                    "id": item_id,
                    "round": r,
                    "rank": pick.rank,
                    "score": pick.score,
                    "strategy": strategy,
                    "pool_size_before": pick.pool_size_before,
                    "reached_from": next(source_ids) if source is not None else None,
                    "label": answer,
                }
            )
        )
    write_text_atomic(out / "rounds" / f"{r:03d}" / "selected.jsonl", "".join(line + "\n" for line in lines))
