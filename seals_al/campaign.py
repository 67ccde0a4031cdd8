"""A SEALS campaign for one concept, living in storage (a local folder or gs://bucket/prefix) and
advancing one round at a time as people's labels come back.

Layout under the campaign URI::

    campaign.json                 the configuration (written once by init)
    seed/<file>                   the seed labels as given
    inbox/NNN/                    where labels for batch NNN are dropped (CSV, JSONL, Label Studio)
    rounds/NNN/                   written by one `round`, committed by COMMITTED, written last:
        labeled.jsonl             the labeled set after this round's ingest (a new version per round)
        relabels.jsonl            label changes recorded this round (id, old, new, source)
        ingested.json             every label file ingested so far, with its sha256 and report
        ingested/<file>           raw copies of this round's label files
        model.json                the classifier (coefficients, no pickle)
        metrics.json              labeled, positives, pool size and fraction, AP and recall if known
        to_label.jsonl            the batch: id, text, score, strategy, round, rank, why it was picked
        to_label.labelstudio.json the batch as Label Studio tasks
        pool/pool.npz, pool.json  the candidate pool after selection
    reports/                      rejection reports of label files
    LOCK                          held while a round runs

A round folder without COMMITTED is an interrupted round: the next `round` recomputes it from the
last committed round (every step is deterministic), so a crash never corrupts or half-publishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import yaml

from seals_al.embed import default_cache_dir
from seals_al.errors import PoolExhaustedError, SealsError
from seals_al.failpoints import failpoint
from seals_al.index import DEFAULT_FACTORY
from seals_al.labels import LabelFileError, check_label_file, label_studio_tasks
from seals_al.pool import CandidatePool
from seals_al.selection import Selection, select_global, select_seals
from seals_al.simulate import MODES, DataConfig, Dataset, Items
from seals_al.storage import AlreadyExistsError, Storage, check_key, local_file, open_storage
from seals_al.strategies import get_strategy
from seals_al.train import LinearModel, average_precision, classification_curves, fit_logistic

CONFIG = "campaign.json"
LOCK = "LOCK"
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class CampaignConfig:
    """What `seals-al init` reads from YAML."""

    concept: str
    data: str  # items (CSV, JSONL or Parquet): a local path or gs://bucket/path
    seed_labels: str  # a label file (CSV, JSONL or Label Studio JSON) with the seed set
    id_column: str = "id"
    text_column: str = "text"
    embeddings: str | None = None
    strategy: str = "maxent"
    mode: str = "seals"
    k: int = 100
    batch_size: int = 100
    budget: int = 1000
    seed: int = 0
    index_factory: str = DEFAULT_FACTORY
    index: str | None = None  # a directory from seals-al build-index (else built from index_factory)
    truth_column: str | None = None  # ground truth, for metrics only (never shown to the labeler)
    split_column: str | None = None
    eval_split: str = "test"
    cache_dir: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignConfig:
        path = Path(path)
        if not path.is_file():
            raise SealsError(f"{path}: no such file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SealsError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes; not a campaign config")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SealsError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise SealsError(f"{path}: expected a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SealsError(
                f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        missing = [f for f in ("concept", "data", "seed_labels") if not data.get(f)]
        if missing:
            raise SealsError(f"{path}: missing setting(s) {', '.join(missing)}")
        base = path.parent
        for name in ("data", "seed_labels", "embeddings", "index"):  # relative paths are relative to the YAML
            if (
                data.get(name)
                and not str(data[name]).startswith("gs://")
                and not Path(data[name]).is_absolute()
            ):
                data[name] = str((base / data[name]).resolve())
        config = cls(**data)
        config.check(str(path))
        return config

    def check(self, where: str) -> None:
        get_strategy(self.strategy)
        if self.mode not in MODES:
            raise SealsError(f"{where}: mode {self.mode!r}; choose from {', '.join(MODES)}")
        for name in ("k", "batch_size", "budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SealsError(f"{where}: {name} must be a positive integer, got {value!r}")

    def data_config(self) -> DataConfig:
        return DataConfig(
            data=self.data,
            text_column=self.text_column,
            label_column=self.truth_column,
            id_column=self.id_column,
            split_column=self.split_column,
            eval_split=self.eval_split,
            embeddings=self.embeddings,
            index_factory=self.index_factory,
            index=self.index,
            cache_dir=self.cache_dir,
        )


def init(config: CampaignConfig, uri: str, seed_file: tuple[str, bytes] | None = None) -> Storage:
    """Create a campaign: write its configuration and seed labels (once).

    Args:
        config: the settings.
        uri: a local folder or gs://bucket/prefix.
        seed_file: (name, contents) of the seed labels; default: read ``config.seed_labels``.
    """
    storage = open_storage(uri)
    if storage.exists(CONFIG):
        raise SealsError(f"{storage.where(CONFIG)}: a campaign exists here already")
    if seed_file is None:
        seed_path = Path(config.seed_labels)
        if not seed_path.is_file():
            raise SealsError(f"{seed_path}: no such seed labels file")
        seed_file = (seed_path.name, seed_path.read_bytes())
    name, data = seed_file
    items = Items.load(config.data_config())  # fail now on a bad items file, not at round 0
    seed_name = check_key(name, name)
    u_ids = {i for i, e in zip(items.ids, items.is_eval, strict=True) if not e}
    seeds = check_label_file(
        seed_name, data, config.concept, open_batch=u_ids, labeled={}, known=set(items.ids)
    )
    if len(set(seeds.new.values())) < 2:
        raise SealsError(f"{name}: the seed labels need at least one positive and one negative")
    storage.write_bytes(f"seed/{seed_name}", data)
    try:
        storage.write_json(CONFIG, {**asdict(config), "seed_labels": f"seed/{seed_name}"}, once=True)
    except AlreadyExistsError as e:
        raise SealsError(f"{storage.where(CONFIG)}: a campaign exists here already") from e
    return storage


def ensure_campaign(config: CampaignConfig, uri: str, seed_file: tuple[str, bytes] | None = None) -> bool:
    """Create the campaign unless the same one exists (re-runs of a pipeline); a campaign with
    other settings at ``uri`` is an error, never overwritten.

    Returns:
        True when it was created now.
    """
    storage = open_storage(uri)
    if not storage.exists(CONFIG):
        init(config, uri, seed_file)
        return True
    stored = storage.read_json(CONFIG, MAX_CONFIG_BYTES)
    given = asdict(config)
    differ = sorted(k for k in given if k != "seed_labels" and stored.get(k) != given[k])
    if differ:
        shown = "; ".join(f"{k}: {stored.get(k)!r} there, {given[k]!r} given" for k in differ)
        raise SealsError(f"{storage.where(CONFIG)}: a campaign with other settings exists here ({shown})")
    return False


def campaign_from_parameters(
    *,
    campaign_uri: str,
    concept: str,
    seed_labels_uri: str = "",
    folder_per_concept: bool = False,
    **settings,
) -> tuple[str, dict]:
    """Create (or find the same) campaign from flat parameters, as a pipeline step passes them.

    With ``folder_per_concept`` the campaign is ``campaign_uri/<concept>``; empty strings mean
    "not set"; without ``seed_labels_uri`` the seeds come from ground truth
    (seed_labels_from_truth).

    Returns:
        (the campaign URI, its configuration as stored).
    """
    uri = (
        f"{campaign_uri.rstrip('/')}/{check_key(concept, 'concept')}" if folder_per_concept else campaign_uri
    )
    renamed = {"items_uri": "data", "embeddings_uri": "embeddings", "index_uri": "index"}
    values = {renamed.get(k, k): (v if v != "" else None) for k, v in settings.items()}
    values = {k: v for k, v in values.items() if v is not None}
    config = CampaignConfig(concept=concept, seed_labels=seed_labels_uri or "seeds.csv", **values)
    config.check(uri)
    storage = open_storage(uri)
    seed_file = None  # only read (or drawn) when the campaign is created
    if not storage.exists(CONFIG):
        if seed_labels_uri:
            path = local_file(seed_labels_uri, config.cache_dir or default_cache_dir())
            if not path.is_file():
                raise SealsError(f"{seed_labels_uri}: no such seed labels file")
            seed_file = (path.name, path.read_bytes())
        else:
            seed_file = ("seeds.csv", seed_labels_from_truth(config, seed=config.seed).encode())
    ensure_campaign(config, uri, seed_file)
    return uri, storage.read_json(CONFIG, MAX_CONFIG_BYTES)


class LabelsTimeout(SealsError):
    """wait_for_labels gave up; the campaign is unchanged."""


def seed_labels_from_truth(
    config: CampaignConfig, positives: int = 5, negatives: int = 95, seed: int = 0
) -> str:
    """Simulation: a seed label file (CSV ``id,label``) drawn from the ground-truth column of U,
    ``positives`` of the concept and ``negatives`` of the rest (the paper's 5 + 95)."""
    if not config.truth_column:
        raise SealsError(f"concept {config.concept!r}: seeds from ground truth need truth_column")
    items = Items.load(config.data_config())
    labels = np.asarray(items.labels, dtype=object)
    in_u = ~items.is_eval
    rng = np.random.default_rng(seed)
    chosen = []
    for want, mask, name in (
        (positives, in_u & (labels == config.concept), "positives"),
        (negatives, in_u & (labels != config.concept), "negatives"),
    ):
        where = np.flatnonzero(mask)
        if len(where) < want:
            raise SealsError(
                f"{config.data}: concept {config.concept!r} has {len(where)} {name} in U; "
                f"the seed set needs {want}"
            )
        chosen += [(items.ids[i], int(name == "positives")) for i in rng.choice(where, want, replace=False)]
    return "id,label\n" + "".join(f"{i},{y}\n" for i, y in chosen)


@dataclass(frozen=True)
class Ingested:
    """What one ingest staged."""

    round: int  # the round being built
    new_labels: int  # examples labeled for the first time
    relabels: int
    labeled: int  # the labeled set's size after the ingest
    files: list[str]


@dataclass
class State:
    """The last committed round, as read back from storage."""

    round: int  # -1 before round 0
    labeled: dict[str, dict]  # id -> {"label", "round", "source"}
    ingested: list[dict]
    batch: list[dict]

    @property
    def pending(self) -> list[dict]:
        return [row for row in self.batch if row["id"] not in self.labeled]


class Campaign:
    def __init__(self, uri: str, progress: bool = True):
        self.storage = open_storage(uri)
        if not self.storage.exists(CONFIG):
            raise SealsError(
                f"{self.storage.uri}: not a campaign (no {CONFIG}); create one with seals-al init"
            )
        self.config = CampaignConfig(**self.storage.read_json(CONFIG, MAX_CONFIG_BYTES))
        self.progress = progress
        self._dataset: Dataset | None = None

    # -- reading state --------------------------------------------------------------------------
    def committed_rounds(self) -> list[int]:
        return sorted(int(k.split("/")[1]) for k in self.storage.list("rounds") if k.endswith("/COMMITTED"))

    def state(self) -> State:
        rounds = self.committed_rounds()
        if not rounds:
            return State(-1, {}, [], [])
        r = rounds[-1]
        labeled = {row["id"]: row for row in self._jsonl(f"rounds/{r:03d}/labeled.jsonl")}
        ingested = self.storage.read_json(f"rounds/{r:03d}/ingested.json")
        return State(r, labeled, ingested, self._jsonl(f"rounds/{r:03d}/to_label.jsonl"))

    def _jsonl(self, key: str) -> list[dict]:
        return _jsonl_rows(self.storage.read_text(key))

    def inbox(self, state: State) -> str:
        return f"inbox/{state.round:03d}"

    def new_label_files(self, state: State) -> dict[str, bytes]:
        """Label files in the open round's inbox (or the seed, before round 0) not ingested yet,
        with their contents (read once: hashed here, parsed by the ingest)."""
        done = {(row["file"], row["sha256"]) for row in state.ingested}
        keys = [self.config.seed_labels] if state.round < 0 else self.storage.list(self.inbox(state))
        fresh = {}
        for key in keys:
            data = self.storage.read_bytes(key)
            if (key, _sha256(data)) not in done:
                fresh[key] = data
        return fresh

    def status(self) -> dict:
        state = self.state()
        metrics = self.storage.read_json(f"rounds/{state.round:03d}/metrics.json") if state.round >= 0 else {}
        # Any file of a round past the last committed one: a round that was interrupted.
        interrupted = sorted(
            {k.split("/")[1] for k in self.storage.list("rounds") if int(k.split("/")[1]) > state.round}
        )
        if state.round < 0:
            waiting = "round 0: run `seals-al round` to ingest the seed labels and publish the first batch"
        elif not state.pending and len(state.labeled) >= self.config.budget:
            waiting = "budget spent: nothing more to label"
        else:
            inbox = self.storage.where(self.inbox(state))
            waiting = f"labels for {len(state.pending)} pending example(s) in {inbox}/"
        return {
            "campaign": self.storage.uri,
            "concept": self.config.concept,
            "rounds": state.round + 1,
            "labeled": len(state.labeled),
            "positives": sum(row["label"] for row in state.labeled.values()),
            "budget": self.config.budget,
            "open_batch": len(state.batch),
            "pending": len(state.pending),
            "pool_size": metrics.get("pool_size"),
            "average_precision": metrics.get("average_precision"),
            "new_label_files": len(self.new_label_files(state)),
            "interrupted_round": interrupted[0] if interrupted else None,
            "lock": self._lock_holder(),
            "waiting_for": waiting,
        }

    def _lock_holder(self) -> str | None:
        if not self.storage.exists(LOCK):
            return None
        holder = self.storage.read_json(LOCK)
        return f"pid {holder.get('pid')} on {holder.get('host')}"

    def next_step(self, target_metric: str = "", target_value: float = 0.0) -> tuple[bool, str]:
        """Whether another round should run after the last committed one, and why (or why not):
        it stops when the budget is spent, the pool is exhausted, or ``target_metric`` (a key of
        metrics.json, e.g. average_precision or recall) reached ``target_value``."""
        state = self.state()
        if state.round < 0:
            return True, "round 0 has not run yet"
        metrics = self.storage.read_json(f"rounds/{state.round:03d}/metrics.json")
        if metrics.get("stopped"):
            return False, f"stopped: {metrics['stopped']}"
        if not state.pending:
            return False, f"budget spent: {len(state.labeled)} of {self.config.budget} labeled"
        if target_metric:
            if target_metric not in metrics:
                known = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, int | float)))
                raise SealsError(f"target metric {target_metric!r} is not in metrics.json; known: {known}")
            value = metrics[target_metric]
            if value >= target_value:
                return False, f"target reached: {target_metric} {value:.4g} >= {target_value:g}"
        inbox = self.storage.where(self.inbox(state))
        return True, f"{len(state.pending)} example(s) to label; drop labels in {inbox}/"

    # -- waiting for people (or an oracle) ------------------------------------------------------
    def wait_for_labels(
        self, poll_seconds: float, timeout_seconds: float, *, progress: bool | None = None
    ) -> list[str]:
        """Poll the open round's inbox until a label file not ingested yet is there.

        Nothing is written, so a timeout leaves the campaign exactly as it was: drop labels in
        the inbox later and resume (another run, or ``seals-al round``).

        Returns:
            The keys of the new label files.

        Raises:
            LabelsTimeout: nothing arrived within ``timeout_seconds``.
        """
        if poll_seconds <= 0 or timeout_seconds < 0:
            raise SealsError(
                f"poll interval must be positive and timeout non-negative, got {poll_seconds}, "
                f"{timeout_seconds}"
            )
        state = self.state()
        deadline = time.monotonic() + timeout_seconds
        inbox = self.storage.where(self.inbox(state))
        polls = 0
        while True:
            fresh = self.new_label_files(state)
            if fresh:
                return sorted(fresh)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabelsTimeout(
                    f"{inbox}/: no new labels after {timeout_seconds:g} s; the campaign is unchanged "
                    f"at round {state.round} ({len(state.pending)} example(s) waiting in "
                    f"{self.storage.where(f'rounds/{state.round:03d}/to_label.jsonl')}). Drop a label "
                    "file there and run the pipeline again, or `seals-al round`, to resume."
                )
            polls += 1
            if progress if progress is not None else self.progress:
                print(f"waiting for labels in {inbox}/ (poll {polls}, {remaining:.0f} s left)", flush=True)
            time.sleep(min(poll_seconds, remaining))

    def oracle_labels(self) -> str | None:
        """Simulation: label the open batch from the ground-truth column into the inbox.

        Returns:
            The key written, or None when nothing is pending.
        """
        if not self.config.truth_column:
            raise SealsError(f"{self.storage.where(CONFIG)}: the oracle needs truth_column")
        state = self.state()
        if not state.pending:
            return None
        dataset = self.dataset()
        ids = [row["id"] for row in state.pending]
        truth = dataset.truth(self.config.concept, dataset.store.row_ids_of(ids))
        key = f"{self.inbox(state)}/oracle.jsonl"
        rows = [json.dumps({"id": i, "label": int(t)}) + "\n" for i, t in zip(ids, truth, strict=True)]
        self.storage.write_text(key, "".join(rows))
        return key

    # -- advancing --------------------------------------------------------------------------------
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = Dataset.prepare(self.config.data_config(), progress=self.progress)
        return self._dataset

    def round(self) -> dict | None:
        """One whole round in one process: ingest new labels, train, evaluate, select, publish.

        Returns:
            The new round's metrics, or None when no label came back (nothing is written).
        """
        with _Lock(self.storage):
            if self._ingest_stage() is None:
                return None
            failpoint("after_ingest")
            self._train_stage()
            failpoint("after_train")
            return self._select_stage()

    # The three stages of a round, for orchestrators that run them as separate steps (the KFP
    # components). Each reads what the previous one wrote under rounds/NNN/ and takes the lock.
    def ingest(self) -> Ingested | None:
        """Stage 1: validate and stage the new label files as round r = last committed + 1.

        Returns:
            What was staged, or None when no new label came back (nothing is written).
        """
        with _Lock(self.storage):
            return self._ingest_stage()

    def train(self) -> dict:
        """Stage 2: fit the classifier on the staged labeled set and evaluate it."""
        with _Lock(self.storage):
            return self._train_stage()

    def select(self) -> dict:
        """Stage 3: expand the pool, select the batch, publish and commit the round."""
        with _Lock(self.storage):
            return self._select_stage()

    def _ingest_stage(self) -> Ingested | None:
        state = self.state()
        files = self.new_label_files(state)
        if not files and state.round >= 0:
            return None
        r = state.round + 1
        labeled, relabels, ingested = self._ingest(state, files, r)
        if state.round >= 0 and not relabels and len(labeled) == len(state.labeled):
            return None  # the new files only repeat labels already known
        base, st = f"rounds/{r:03d}", self.storage
        st.write_text(
            f"{base}/labeled.jsonl", "".join(json.dumps(labeled[i]) + "\n" for i in sorted(labeled))
        )
        st.write_text(f"{base}/relabels.jsonl", "".join(json.dumps(row) + "\n" for row in relabels))
        for key, data in files.items():
            st.write_bytes(f"{base}/ingested/{key.replace('/', '_')}", data)
        st.write_json(f"{base}/ingested.json", ingested)  # last: the stage is complete
        new = len(labeled) - len(state.labeled)
        return Ingested(r, new, len(relabels), len(labeled), sorted(files))

    def _staged(self, stage: str, state: State) -> tuple[int, dict[str, dict], str]:
        """The round being built (last committed + 1), its staged labeled set and that file's
        sha256 (read once, so the model is tied to exactly what it was fit on)."""
        r = state.round + 1
        base = f"rounds/{r:03d}"
        if not self.storage.exists(f"{base}/ingested.json"):
            raise SealsError(
                f"{self.storage.where(base)}: no labels ingested for round {r}; run label ingest "
                f"before {stage}"
            )
        data = self.storage.read_bytes(f"{base}/labeled.jsonl")
        labeled = {row["id"]: row for row in _jsonl_rows(data.decode())}
        return r, labeled, _sha256(data)

    def _train_stage(self) -> dict:
        cfg, dataset = self.config, self.dataset()
        r, labeled, digest = self._staged("train", self.state())
        store = dataset.store
        ids = sorted(labeled)
        y = np.asarray([labeled[i]["label"] for i in ids])
        model = fit_logistic(store.vectors(store.row_ids_of(ids)), y, seed=cfg.seed)
        evaluation: dict = {"round": r, "labeled": len(ids), "positives": int(y.sum())}
        if dataset.labels is not None:
            truth_u = dataset.truth(cfg.concept, dataset.u_rows)
            evaluation["recall"] = float(y.sum() / max(truth_u.sum(), 1))
            truth_eval = dataset.truth(cfg.concept, dataset.eval_rows)
            if len(dataset.eval_rows) and truth_eval.any():
                scores = model.decision_function(store.vectors(dataset.eval_rows))
                evaluation["average_precision"] = average_precision(truth_eval, scores)
                evaluation["classification"] = classification_curves(truth_eval, scores)
        base = f"rounds/{r:03d}"
        self.storage.write_json(f"{base}/evaluation.json", evaluation)
        saved = {**model.to_json(), "round": r, "labeled_sha256": digest}
        self.storage.write_json(f"{base}/model.json", saved)
        return {k: v for k, v in evaluation.items() if k != "classification"}

    def _select_stage(self) -> dict:
        cfg, dataset = self.config, self.dataset()
        state = self.state()
        r, labeled, digest = self._staged("select", state)
        base = f"rounds/{r:03d}"
        if not self.storage.exists(f"{base}/model.json"):
            raise SealsError(f"{self.storage.where(base)}: no model trained for round {r}; run train first")
        saved = self.storage.read_json(f"{base}/model.json")
        if saved.get("labeled_sha256") != digest:
            raise SealsError(
                f"{self.storage.where(base)}: labels were ingested again after the model was trained; "
                "run train again"
            )
        model = LinearModel.from_json(saved)
        store, strategy = dataset.store, get_strategy(cfg.strategy)
        evaluation = self.storage.read_json(f"{base}/evaluation.json")
        metrics = {k: v for k, v in evaluation.items() if k != "classification"}
        # The pool: restored from the last round, expanded with every newly labeled example.
        pool = None
        if cfg.mode == "seals":
            source = dataset.neighbours(cfg.k, self.progress)
            if state.round >= 0:
                pool = CandidatePool.load(self.storage, f"rounds/{state.round:03d}/pool", source, store)
            else:
                pool = CandidatePool(source, store, cfg.k, with_density=strategy.needs_density)
            pool.expand(store.row_ids_of(sorted(labeled)).tolist())
        carried = [dict(row, carried_over=True) for row in state.batch if row["id"] not in labeled]
        want = max(0, min(cfg.batch_size - len(carried), cfg.budget - len(labeled) - len(carried)))
        started = time.perf_counter()
        selection = Selection([], 0, exhausted=False)
        if want:
            try:
                selection = self._select(pool, dataset, model, strategy, want, r, labeled, carried)
            except PoolExhaustedError as e:
                metrics["stopped"] = str(e)
        metrics.update(
            selection_seconds=time.perf_counter() - started,
            scored=selection.scored,
            pool_size=len(pool) if pool is not None else len(dataset.u_rows) - len(labeled),
        )
        metrics["pool_fraction"] = metrics["pool_size"] / len(dataset.u_rows)
        batch = carried + self._batch_rows(selection, r)
        metrics["batch"] = len(batch)
        self._publish(r, metrics, batch, pool)
        return metrics

    def _batch_rows(self, selection: Selection, r: int) -> list[dict]:
        """The picks as rows for labelers: external id, text, score and why each was picked."""
        dataset, store = self.dataset(), self.dataset().store
        picked = [p.row_id for p in selection.picks]
        texts = dict(
            zip(dataset.items.ids, dataset.items.texts or [""] * len(dataset.items.ids), strict=True)
        )
        external = store.external_ids(np.asarray(picked, dtype=np.int64)) if picked else []
        sources = sorted({p.reached_from for p in selection.picks if p.reached_from is not None})
        source_ids = (
            dict(zip(sources, store.external_ids(np.asarray(sources, dtype=np.int64)), strict=True))
            if sources
            else {}
        )
        return [
            {
                "id": item,
                "text": texts.get(item, ""),
                "score": p.score,
                "strategy": self.config.strategy,
                "round": r,
                "rank": p.rank,
                "pool_size_before": p.pool_size_before,
                "reached_from": source_ids.get(p.reached_from) if p.reached_from is not None else None,
            }
            for item, p in zip(external, selection.picks, strict=True)
        ]

    def _ingest(self, state: State, files: dict[str, bytes], r: int):
        """Validate every new file first; any hard error rejects that file and stops the round."""
        items = self.dataset().items
        known = set(items.ids)
        # Seeds may be any item of U (never of the evaluation split); later labels, the open batch.
        u_ids = {i for i, e in zip(items.ids, items.is_eval, strict=True) if not e}
        open_batch = u_ids if state.round < 0 else {row["id"] for row in state.batch}
        labeled = {i: dict(row) for i, row in state.labeled.items()}
        relabels, ingested = [], list(state.ingested)
        for key, data in files.items():
            try:
                result = check_label_file(
                    key.split("/")[-1],
                    data,
                    self.config.concept,
                    open_batch=open_batch,
                    labeled={i: row["label"] for i, row in labeled.items()},
                    known=known,
                )
            except LabelFileError as e:
                report = {"file": key, "rejected": True, "problems": [asdict(p) for p in e.problems]}
                self.storage.write_json(f"reports/{key.replace('/', '_')}-{_sha256(data)[:12]}.json", report)
                raise SealsError(f"{self.storage.where(key)}: {e.detail}") from e
            for item_id, label in result.new.items():
                labeled[item_id] = {"id": item_id, "label": label, "round": r, "source": key}
            for item_id, (old, new) in result.relabels.items():
                relabels.append({"id": item_id, "old": old, "new": new, "round": r, "source": key})
                labeled[item_id] = {"id": item_id, "label": new, "round": r, "source": key}
            ingested.append({"file": key, "sha256": result.sha256, "round": r, "report": result.report()})
        return labeled, relabels, ingested

    def _select(self, pool, dataset, model, strategy, want, r, labeled, carried) -> Selection:
        cfg = self.config
        if pool is not None:
            return select_seals(pool, model, strategy, want, seed=cfg.seed, round_index=r)
        store = dataset.store
        selectable = np.zeros(len(store), dtype=bool)
        selectable[store.positions(dataset.u_rows)] = True
        taken = [*labeled, *(row["id"] for row in carried)]
        selectable[store.positions(store.row_ids_of(taken))] = False
        density = dataset.u_density(cfg.k, self.progress) if strategy.needs_density else None
        return select_global(
            store, selectable, model, strategy, want, seed=cfg.seed, round_index=r, density=density
        )

    def _publish(self, r, metrics, batch, pool) -> None:
        """Write the rest of the round folder, object by object; COMMITTED last makes it current."""
        base = f"rounds/{r:03d}"
        st = self.storage
        if pool is not None:
            pool.save(st, f"{base}/pool")
        failpoint("during_publish")
        st.write_text(f"{base}/to_label.jsonl", "".join(json.dumps(row) + "\n" for row in batch))
        st.write_json(f"{base}/to_label.labelstudio.json", label_studio_tasks(batch, self.config.concept))
        st.write_json(f"{base}/metrics.json", metrics)
        st.write_json(f"{base}/COMMITTED", {"round": r, "committed_at": time.time()})


class _Lock:
    """One round at a time: LOCK is written once; a lock left by a dead process on this host is
    taken over, a live one makes the second `round` fail clearly."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}

    def __enter__(self) -> _Lock:
        try:
            self.storage.write_json(LOCK, self.mine, once=True)
        except AlreadyExistsError:
            holder = self.storage.read_json(LOCK)
            if holder.get("host") == self.mine["host"] and not _alive(int(holder.get("pid", -1))):
                self.storage.write_json(LOCK, self.mine)  # the holder died mid-round: take over
            else:
                raise SealsError(
                    f"{self.storage.where(LOCK)}: another round is running (pid {holder.get('pid')} on "
                    f"{holder.get('host')}); try again when it ends"
                ) from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            holder = self.storage.read_json(LOCK)
        except SealsError:
            return  # already gone; never mask the round's own outcome
        if holder.get("pid") == self.mine["pid"] and holder.get("host") == self.mine["host"]:
            self.storage.delete(LOCK)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _jsonl_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
