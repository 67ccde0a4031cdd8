"""A SEALS campaign for one concept, living in storage (a local folder or gs://bucket/prefix) and
advancing one round at a time as people's labels come back (layout: :mod:`.layout`).

A round is three stages, each under the campaign's lease, each reading what the one before wrote
under ``rounds/NNN/``: ingest (validate and stage new label files), train (fit and evaluate), select
(expand the pool, select, publish; ``COMMITTED`` last). Train and select are the round engine's
steps (:mod:`seals_al.round`). A round folder without ``COMMITTED`` is an interrupted round: the
next run recomputes it from the last committed round (every step is deterministic), so a crash
never corrupts or half-publishes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from seals_al.campaign import examples
from seals_al.campaign.config import CampaignConfig
from seals_al.campaign.layout import CONFIG, DERIVED, MAX_CONFIG_BYTES
from seals_al.campaign.lease import Lease
from seals_al.campaign.state import Oversized, State, StateReader, jsonl_rows, report_key, sha256
from seals_al.errors import SealsError, shown
from seals_al.failpoints import failpoint
from seals_al.labelformats.answers import LabelFileError, Problem
from seals_al.labelformats.files import check_label_file, check_size
from seals_al.labelformats.labelstudio import label_studio_tasks
from seals_al.record import RoundRecord
from seals_al.storage import open_storage
from seals_al.storage.base import NotFoundError

if TYPE_CHECKING:  # imported where used: a stage that only reads or ingests starts without them
    from seals_al.dataset import Dataset
    from seals_al.round import Candidates, RoundEngine
    from seals_al.selection import Selection
    from seals_al.train import LinearModel


@dataclass(frozen=True)
class StagedLabels:
    """What one ingest staged."""

    round: int  # the round being built
    new_labels: int  # examples labeled for the first time
    relabels: int
    labeled: int  # the labeled set's size after the ingest
    files: list[str]


class Campaign(StateReader):
    """One campaign: its state (:class:`~.state.StateReader`) and the stages that advance it."""

    def __init__(self, uri: str, progress: bool = True):
        storage = open_storage(uri)
        try:
            raw = storage.read_json(CONFIG, MAX_CONFIG_BYTES)
        except NotFoundError:
            raise SealsError(
                f"{storage.uri}: not a campaign (no {CONFIG}); create one with seals-al init"
            ) from None
        config = CampaignConfig.from_json(raw, storage.where(CONFIG))
        storage.hold_writes()  # its stages write under the lease and read back what they wrote
        super().__init__(storage, config)
        self.progress = progress
        self._dataset: Dataset | None = None
        self._engine: RoundEngine | None = None
        self._lease: Lease | None = None

    @contextmanager
    def leased(self) -> Iterator[Lease]:
        """Hold the campaign's lease while a stage runs (its commit checks it is still held)."""
        with Lease(self.storage) as lease:
            self._lease = lease
            try:
                yield lease
            finally:
                self._lease = None

    # -- what the stages read ----------------------------------------------------------------
    def dataset(self) -> Dataset:
        """The prepared items and embeddings (prepared on first use by any campaign or run over
        the same data version, on any machine when the data is on gs://): each stage reads only
        the ids, rows and texts it needs."""
        if self._dataset is None:
            from seals_al.dataset import Dataset
            from seals_al.storage.uris import is_remote

            derived = self.storage.where(DERIVED) if is_remote(self.storage.uri) else None
            self._dataset = Dataset.prepare(self.config.dataset, progress=self.progress, derived=derived)
        return self._dataset

    def _remember(self, state: State) -> None:
        """Hand the dataset the examples the last round saved (ids, row ids, vectors), when they
        are of the data version in use: the stage then reads none of them again."""
        if state.round < 0 or not self.storage.exists(self.keys(state.round).data):
            return
        dataset = self.dataset()
        data = self.storage.read_json(self.keys(state.round).data)
        if (data.get("version"), data.get("store")) != (dataset.prepared.key, dataset.store.digest()):
            return
        saved = examples.load(self.storage, self.keys(state.round).examples)
        if saved is not None:
            dataset.remember(*saved)

    def engine(self) -> RoundEngine:
        if self._engine is None:
            from seals_al.round import RoundEngine

            self._engine = RoundEngine(
                self.dataset(), self.config.learning, self.config.concept, self.progress
            )
        return self._engine

    # -- advancing -----------------------------------------------------------------------------
    def round(self) -> dict | None:
        """One whole round in one process: ingest new labels, train, evaluate, select, publish.

        Returns:
            The new round's record (as in metrics.json), or None when no label came back.
        """
        with self.leased():
            # Unchanged until select commits: the lease is held throughout.
            state = self.state(also=self._ingest_reads)
            if self._ingest_stage(state) is None:
                return None
            failpoint("after_ingest")
            self._train_stage(state)
            failpoint("after_train")
            return self._select_stage(state)

    # The three stages, for orchestrators that run them as separate steps (the KFP components and
    # the Argo template). Each takes the lease.
    def ingest(self) -> StagedLabels | None:
        """Stage 1: validate and stage the new label files as round r = last committed + 1.

        Returns:
            What was staged, or None when no new label came back (nothing is written).
        """
        with self.leased():
            return self._ingest_stage(self.state(also=self._ingest_reads))

    def train(self) -> dict:
        """Stage 2: fit the classifier on the staged labeled set and evaluate it."""
        with self.leased():
            return self._train_stage(self.state(also=self._train_reads))

    def select(self) -> dict:
        """Stage 3: expand the pool, select the batch, publish and commit the round."""
        with self.leased():
            return self._select_stage(self.state(also=self._select_reads))

    # What each stage reads of the campaign, given the last committed round r: read with the
    # state, in one batch (on gs://, one round trip instead of one per file).
    def _ingest_reads(self, r: int) -> list[str]:
        return [self.keys(r).data] if r >= 0 else []

    def _train_reads(self, r: int) -> list[str]:
        last, new = self.keys(r), self.keys(r + 1)
        return [*self._ingest_reads(r), last.examples, new.ingested, new.labeled]

    def _select_reads(self, r: int) -> list[str]:
        from seals_al.pool import VECTORS

        last, new = self.keys(r), self.keys(r + 1)
        pool = [f"{last.pool}/{name}" for name in ("pool.json", "pool.npz", VECTORS)]
        return [*self._train_reads(r), last.metrics, *pool, new.model, new.evaluation, new.relabels]

    def _ingest_stage(self, state: State) -> StagedLabels | None:
        files = self.new_label_files(state)
        if not files and state.round >= 0:
            return None
        r = state.round + 1
        labeled, relabels, ingested = self._validate(state, files, r)
        if state.round >= 0 and not relabels and len(labeled) == len(state.labeled):
            return None  # the new files only repeat labels already known
        keys, st = self.keys(r), self.storage
        st.write_text(keys.labeled, "".join(json.dumps(labeled[i]) + "\n" for i in sorted(labeled)))
        st.write_text(keys.relabels, "".join(json.dumps(row) + "\n" for row in relabels))
        for entry in ingested:
            if entry["round"] == r:  # this round's files; the list holds every earlier one too
                st.write_bytes(entry["copy"], files[entry["file"]])
        st.write_json(keys.ingested, ingested)  # last: the stage is complete
        new = len(labeled) - len(state.labeled)
        return StagedLabels(r, new, len(relabels), len(labeled), sorted(files))

    def _validate(self, state: State, files: dict[str, bytes | Oversized], r: int):
        """Validate every new file first; any hard error rejects that file and stops the round.

        Returns:
            (the labeled set after these files, the relabels, the ingested-files list).
        """
        dataset = self.dataset()
        if not self._same_data(state):
            self._check_items_kept(state)
        # Seeds may be any item of U (never of the evaluation split); later labels, the open batch,
        # and any other item of U a person found outside it (recorded as found outside the batch).
        in_u = dataset.id_set(in_u=True)
        # After round 0, the open batch; and a tombstoned id, whose late label is kept in the history.
        open_batch = in_u if state.round < 0 else state.batch_ids | dataset.removed_ids
        found_in = None if state.round < 0 else in_u
        known = dataset.id_set()
        labeled = {i: dict(row) for i, row in state.labeled.items()}
        relabels, ingested = [], list(state.ingested)
        for key, data in files.items():
            name = key.split("/")[-1]
            try:
                if isinstance(data, Oversized):
                    check_size(name, data.size)  # rejects it, unread
                result = check_label_file(
                    name,
                    data,
                    self.config.concept,
                    open_batch=open_batch,
                    labeled={i: row["label"] for i, row in labeled.items()},
                    known=known,
                    in_u=in_u,
                    found_in=found_in,
                )
                # Two files of one round that disagree: neither wins by its name's order.
                clashes = [
                    Problem("file", f"id {shown(i)} labeled {new} here and {old} in {labeled[i]['source']}")
                    for i, (old, new) in result.relabels.items()
                    if labeled[i]["round"] == r
                ]
                if clashes:
                    raise LabelFileError(name, clashes)
            except LabelFileError as e:
                report = {
                    "file": key,
                    "rejected": True,
                    "problems_total": e.total,
                    "problems": [asdict(p) for p in e.problems],  # the first MAX_PROBLEMS
                }
                self.storage.write_json(report_key(key, data), report)
                raise SealsError(f"{self.storage.where(key)}: {e.detail}") from e
            # Where each label came from: the file (and its sha256), and who gave it, how and when.
            given = result.provenance()
            for item_id in result.found:  # its neighbours join the pool once it is labeled
                given[item_id] = {**given.get(item_id, {}), "outside_batch": True}
            origin = {"round": r, "source": key, "sha256": result.sha256}
            for item_id, label in result.new.items():
                labeled[item_id] = {"id": item_id, "label": label, **origin, **given.get(item_id, {})}
            for item_id, (old, new) in result.relabels.items():
                relabels.append({"id": item_id, "old": old, "new": new, **origin, **given.get(item_id, {})})
                labeled[item_id] = {"id": item_id, "label": new, **origin, **given.get(item_id, {})}
            copy = self.keys(r).ingested_copy(key, result.sha256)
            ingested.append(
                {"file": key, "sha256": result.sha256, "round": r, "copy": copy, "report": result.report()}
            )
        return labeled, relabels, ingested

    def _same_data(self, state: State) -> bool:
        """Whether the data version in use is the one the last round ran on (then every item it
        labeled or sent out is still there, and nothing needs looking up to know it)."""
        if state.round < 0 or not self.storage.exists(self.keys(state.round).data):
            return False
        before = self.storage.read_json(self.keys(state.round).data)
        dataset = self.dataset()
        return (before.get("version"), before.get("removed")) == (
            dataset.prepared.key,
            len(dataset.removed_items),
        )

    def _check_items_kept(self, state: State) -> None:
        """The items may change between rounds (a new data version is prepared), but every item the
        campaign has labeled or sent out for labeling must still be there."""
        removed = self.dataset().removed_ids
        used = [i for i in (*state.labeled, *(row["id"] for row in state.batch)) if i not in removed]
        if not used:
            return
        present = self.dataset().prepared.contains(used)
        if not present.all():
            missing = [item_id for item_id, kept in zip(used, present, strict=True) if not kept]
            raise SealsError(
                f"{self.config.dataset.data}: {len(missing)} item(s) this campaign has labeled or sent "
                f"out for labeling are no longer in it (the first: {shown(missing[0])}); put them back, "
                "list them in the tombstone list (the removed setting), or start a new campaign over "
                "the new items"
            )

    def _training_ids(self, labeled: dict[str, dict]) -> list[str]:
        """The labeled ids the model is fit on, sorted: every one, but a tombstoned item's only
        with ``train_on_removed`` and while it is still in the data."""
        dataset = self.dataset()
        removed = dataset.removed_ids
        ids = sorted(labeled)
        if not removed:
            return ids
        kept = [i for i in ids if i not in removed]
        if self.config.train_on_removed:
            out = [i for i in ids if i in removed]
            kept += [i for i, present in zip(out, dataset.prepared.contains(out), strict=True) if present]
        return sorted(kept)

    def _staged(self, stage: str, state: State) -> tuple[int, dict[str, dict], str]:
        """The round being built (last committed + 1), its staged labeled set and that file's
        sha256 (read once, so the model is tied to exactly what it was fit on)."""
        r = state.round + 1
        keys = self.keys(r)
        if not self.storage.exists(keys.ingested):
            raise SealsError(
                f"{self.storage.where(keys.dir)}: no labels ingested for round {r}; run label ingest "
                f"before {stage}"
            )
        data = self.storage.read_bytes(keys.labeled)
        labeled = {row["id"]: row for row in jsonl_rows(data.decode())}
        return r, labeled, sha256(data)

    def _train_stage(self, state: State) -> dict:
        r, labeled, digest = self._staged("train", state)
        engine = self.engine()
        self._remember(state)
        ids = self._training_ids(labeled)
        y = np.asarray([labeled[i]["label"] for i in ids])
        model = engine.train(engine.dataset.row_ids_of(ids), y)
        evaluation = {"round": r, **_without_none(asdict(engine.evaluate(model, y, curves=True)))}
        keys = self.keys(r)
        self.storage.write_json(keys.evaluation, evaluation)
        self.storage.write_json(keys.model, {**model.to_json(), "round": r, "labeled_sha256": digest})
        return {k: v for k, v in evaluation.items() if k != "classification"}

    def _select_stage(self, state: State) -> dict:
        from seals_al.round import Evaluation
        from seals_al.train import LinearModel

        r, labeled, digest = self._staged("select", state)
        keys, engine = self.keys(r), self.engine()
        if not self.storage.exists(keys.model):
            raise SealsError(
                f"{self.storage.where(keys.dir)}: no model trained for round {r}; run train first"
            )
        saved = self.storage.read_json(keys.model)
        if saved.get("labeled_sha256") != digest:
            raise SealsError(
                f"{self.storage.where(keys.dir)}: labels were ingested again after the model was trained; "
                "run train again"
            )
        evaluation = self.storage.read_json(keys.evaluation)
        evaluation.pop("round")
        self._remember(state)
        # The candidates: the pool as the last round left it, or fresh; then everything taken since
        # (the newly labeled examples, and examples still out for labeling) leaves them.
        examples = {*state.labeled, *(row["id"] for row in state.batch)}  # expanded when last saved
        candidates = (
            engine.restore(self.storage, self.keys(state.round).pool, examples)
            if state.round >= 0
            else engine.candidates()
        )
        # Tombstoned items leave the candidates and the batch, and no longer expand the pool.
        removed = engine.dataset.removed_ids
        candidates.remove(engine.dataset.removed_rows())
        carried = [
            dict(row, carried_over=True)
            | ({"reached_from": None} if row.get("reached_from") in removed else {})
            for row in state.batch
            if row["id"] not in labeled and row["id"] not in removed
        ]
        taken = sorted(set(labeled) - set(state.labeled)) if candidates.restored else sorted(labeled)
        taken = [i for i in taken if i not in removed]
        queries = candidates.queries
        candidates.exclude(engine.dataset.row_ids_of([*taken, *(row["id"] for row in carried)]))
        queries = candidates.queries - queries
        budget = self.config.budget - len(labeled) - len(carried)
        want = max(0, min(self.config.learning.batch_size - len(carried), budget))
        model = LinearModel.from_json(saved)
        outcome = engine.select(candidates, model, want, r)
        batch = carried + self._batch_rows(outcome.selection, model, r, candidates)
        record = engine.record(r, Evaluation(**evaluation), outcome, len(batch), queries)
        data, changes = self._data_record(state)
        record = replace(record, **changes)
        self._publish(r, record, batch, candidates, data, self._examples(labeled, batch))
        return record.to_json()

    def _examples(
        self, labeled: dict[str, dict], batch: list[dict]
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, row ids, vectors) of every example labeled or out for labeling after this round,
        for the next round to take instead of looking them up: the stage holds them already (the
        last round's, and this round's picks, remembered as they were named), but new seeds."""
        dataset = self.dataset()
        ids = sorted({*labeled, *(row["id"] for row in batch)} - dataset.removed_ids)
        rows = dataset.row_ids_of(ids)
        return ids, rows, dataset.store.vectors(rows)

    def _data_record(self, state: State) -> tuple[dict, dict]:
        """This round's data.json, and what the round record gains from it: nothing while the
        data never changed (the record is as it always was); from the first round whose data
        differs from the last round's (another version, or other items tombstoned) on, the items
        added and removed since the last round and the index's rows."""
        dataset = self.dataset()
        prepared = dataset.prepared
        data = {
            "version": prepared.key,
            "store": dataset.store.digest(),
            "items": prepared.count,
            "u_items": prepared.u_count,
            "removed": len(dataset.removed_items),
        }
        last = self.keys(state.round)
        if state.round < 0 or not self.storage.exists(last.data):
            return data, {}
        before = self.storage.read_json(last.data)
        changed = (before["version"], before["removed"]) != (data["version"], data["removed"])
        if not changed and "index_rows" not in self.storage.read_json(last.metrics):
            return data, {}
        counted = prepared.changes_since(str(before["version"]), str(before["store"]))
        added, gone = counted if counted is not None else (None, None)
        removed = None if gone is None else max(0, gone + data["removed"] - int(before["removed"]))
        return data, {"items_added": added, "items_removed": removed, "index_rows": prepared.u_count}

    def _batch_rows(
        self, selection: Selection, model: LinearModel, r: int, candidates: Candidates
    ) -> list[dict]:
        """The picks as rows for labelers: external id, text, score, the model's probability that
        it is the concept, and why each was picked."""
        dataset = self.dataset()
        picked = np.asarray([p.row_id for p in selection.picks], dtype=np.int64)
        sources = sorted({p.reached_from for p in selection.picks if p.reached_from is not None})
        # Every id and text at once: two round trips on object storage.
        named, texts = dataset.ids_and_texts(np.concatenate([picked, np.asarray(sources, np.int64)]), picked)
        external = named[: len(picked)]
        vectors = candidates.vectors_of(picked)
        dataset.remember(external, picked, vectors)  # the round's examples now: nothing to look up
        probabilities = model.predict_proba(vectors) if len(picked) else []
        source_ids = dict(zip(sources, named[len(picked) :], strict=True))
        return [
            {
                "id": item,
                "text": text,
                "score": p.score,
                "strategy": self.config.learning.strategy,
                "round": r,
                "rank": p.rank,
                "pool_size_before": p.pool_size_before,
                "reached_from": source_ids.get(p.reached_from) if p.reached_from is not None else None,
                "probability": float(probability),
            }
            for item, text, p, probability in zip(
                external, texts, selection.picks, probabilities, strict=True
            )
        ]

    def _publish(
        self,
        r: int,
        record: RoundRecord,
        batch: list[dict],
        candidates: Candidates,
        data: dict,
        known: tuple[list[str], np.ndarray, np.ndarray],
    ) -> None:
        """Write the rest of the round folder, object by object; COMMITTED last makes it current.
        The pool's saved vectors of two rounds back are let go after (derived data; a round
        restores from the last one)."""
        keys, st = self.keys(r), self.storage
        candidates.save(st, keys.pool)
        failpoint("during_publish")
        examples.save(st, keys.examples, *known)
        st.write_json(keys.data, data)
        st.write_text(keys.to_label, "".join(json.dumps(row) + "\n" for row in batch))
        st.write_json(keys.label_studio, label_studio_tasks(batch, self.config.concept))
        st.write_json(keys.metrics, record.to_json())
        if self._lease is not None:
            self._lease.check()  # a stage that lost its lease (stalled, taken over) never commits
        st.write_json(keys.committed, {"round": r, "committed_at": time.time()})
        if r >= 2:
            from seals_al.pool import VECTORS

            st.delete(f"{self.keys(r - 2).pool}/{VECTORS}")


def _without_none(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}
