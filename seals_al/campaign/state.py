"""Reading a campaign's state: the last committed round, the label files not ingested yet,
status, whether to go on, and waiting for labels. Nothing here writes (a wait's ``watch`` may
bring labels into the inbox)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from seals_al.campaign.config import CampaignConfig
from seals_al.campaign.layout import (
    INBOX,
    ROUNDS,
    RoundKeys,
    inbox_round,
    rejection_report,
    round_of,
)
from seals_al.campaign.lease import holder
from seals_al.errors import SealsError, shown
from seals_al.labelformats import files as label_files
from seals_al.labelformats.labeled_set import labels_by_annotator
from seals_al.storage.base import Storage, TooLargeError


@dataclass(frozen=True)
class Oversized:
    """A label file over the size limit, left unread; the ingest rejects it by its size."""

    size: int


class LabelsTimeout(SealsError):
    """wait_for_labels gave up; the campaign is unchanged."""


@dataclass
class State:
    """The last committed round, as read back from storage."""

    round: int  # -1 before round 0
    labeled: dict[str, dict]  # id -> {"label", "round", "source", "sha256", and who gave it: "by", ...}
    ingested: list[dict]
    batch: list[dict]

    @property
    def pending(self) -> list[dict]:
        return [row for row in self.batch if row["id"] not in self.labeled]

    @property
    def batch_ids(self) -> set[str]:
        return {row["id"] for row in self.batch}


class StateReader:
    """What a campaign's storage says about it (the base of :class:`~.stages.Campaign`)."""

    def __init__(self, storage: Storage, config: CampaignConfig):
        self.storage = storage
        self.config = config

    @staticmethod
    def keys(r: int) -> RoundKeys:
        """The keys of round ``r``."""
        return RoundKeys(r)

    # -- reading state --------------------------------------------------------------------------
    def committed_rounds(self) -> list[int]:
        keys = self.storage.list(ROUNDS)
        return sorted(r for k in keys if k.endswith("/COMMITTED") and (r := round_of(k)) is not None)

    def state(self, also: Callable[[int], Iterable[str]] | None = None) -> State:
        """The last committed round. ``also``: the keys a stage will read, given that round (its
        own and the next round's files): read with the state's own files, in one batch. What
        was read before (by an earlier stage of this object) is read again."""
        self.storage.forget()
        rounds = self.committed_rounds()
        r = rounds[-1] if rounds else -1
        keys = self.keys(r)
        own = [keys.labeled, keys.ingested, keys.to_label] if r >= 0 else []
        self.storage.prefetch([*own, *(also(r) if also is not None else ())])
        if not rounds:
            return State(-1, {}, [], [])
        labeled = {row["id"]: row for row in jsonl_rows(self.storage.read_text(keys.labeled))}
        ingested = self.storage.read_json(keys.ingested)
        return State(rounds[-1], labeled, ingested, jsonl_rows(self.storage.read_text(keys.to_label)))

    def inbox(self, state: State) -> str:
        """Where labels for the open batch are dropped."""
        return self.keys(state.round).inbox

    def new_label_files(self, state: State) -> dict[str, bytes | Oversized]:
        """Label files not ingested yet, with their contents (read once: hashed here, parsed by the
        ingest): the seed before round 0, then every inbox up to the open batch's. A file that
        arrives in an older inbox after its round committed (or a labeler still saving there) is
        taken in too: every example picked earlier is labeled or still out, carried over."""
        done = {(row["file"], row["sha256"]) for row in state.ingested}
        keys = [self.config.seed_labels]
        if state.round >= 0:
            keys = [k for k in self._inbox_keys(state) if self._unusable(k) is None]
        self.storage.prefetch(keys, label_files.MAX_LABEL_FILE_BYTES)
        fresh: dict[str, bytes | Oversized] = {}
        for key in keys:
            try:  # the size is checked before the file is read: a huge file is never read
                data = self.storage.read_bytes(key, label_files.MAX_LABEL_FILE_BYTES)
            except TooLargeError as e:
                fresh[key] = Oversized(e.size)
                continue
            if (key, sha256(data)) not in done:
                fresh[key] = data
        return fresh

    def intake(self, r: int) -> list[str]:
        """What round ``r`` took in, one line each: every label file with its counts (and whether
        it came late, after its own batch had closed), the relabels, and the examples carried
        over because they are still out for labeling."""
        keys = self.keys(r)
        lines = []
        for row in self.storage.read_json(keys.ingested):
            if row["round"] != r:
                continue
            report, answered = row["report"], inbox_round(row["file"])
            line = (
                f"{row['file']}: {report['new']} new, {len(report['relabels'])} relabeled, "
                f"{report['unchanged']} unchanged"
            )
            if report.get("found_outside_batch"):
                line += f", {report['found_outside_batch']} found outside the batch"
            if report.get("pending_tasks"):
                line += f", {report['pending_tasks']} Label Studio task(s) not annotated yet"
            if answered is not None and answered < r - 1:
                line += f" (late: batch {answered} had closed; its labels count from round {r})"
            lines.append(line)
        relabels = len(jsonl_rows(self.storage.read_text(keys.relabels)))
        if relabels:
            lines.append(f"{relabels} label(s) changed: {self.storage.where(keys.relabels)}")
        batch = jsonl_rows(self.storage.read_text(keys.to_label))
        carried = sum(1 for row in batch if row.get("carried_over"))
        if carried:
            lines.append(
                f"{carried} example(s) of earlier batches still unlabeled, carried over into batch {r}"
            )
        return lines

    def _inbox_keys(self, state: State) -> list[str]:
        """Every file in the inboxes up to the open batch's, hidden ones included."""
        keys = self.storage.list(INBOX, hidden=True)  # hidden ones too: status names them
        return [k for k in keys if (r := inbox_round(k)) is not None and r <= state.round]

    def _unusable(self, key: str) -> str | None:
        """Why a file in the inbox is never read as labels (a hidden name, a name not every storage
        can hold, a link out of the campaign), or None. Such a file is listed by status, not read."""
        if any(part.startswith(".") for part in key.split("/")):
            return "a hidden file"
        try:
            if self.storage.leads_outside(key):
                return "a link that leads outside the campaign"
        except SealsError:  # check_key: a backslash, a control character, a name over the limits
            return "not a plain file name"
        return None

    def ignored_files(self, state: State) -> list[str]:
        """Every file of the inboxes that is never read as labels, one line each, with why."""
        if state.round < 0:
            return []
        keys = self._inbox_keys(state)
        return [
            f"{shown(k, 120)}: ignored ({why}); rename or remove it"
            for k in keys
            if (why := self._unusable(k))
        ]

    def label_files(self, state: State) -> list[str]:
        """Every label file not taken in yet, one line each: rejected (with its report), late
        (dropped into the inbox of a batch that has closed) or waiting for the next round."""
        lines = []
        for key, data in self.new_label_files(state).items():
            report = report_key(key, data)
            answered = inbox_round(key)
            if self.storage.exists(report):
                lines.append(f"{key}: rejected, see {self.storage.where(report)}")
            elif answered is not None and answered < state.round:
                lines.append(f"{key}: late (batch {answered} has closed); the next round takes it in")
            else:
                lines.append(f"{key}: the next round takes it in")
        return lines

    def status(self) -> dict:
        state = self.state()
        metrics = self.storage.read_json(self.keys(state.round).metrics) if state.round >= 0 else {}
        # Any file of a round past the last committed one: a round that was interrupted.
        interrupted = sorted(
            {
                k.split("/")[1]
                for k in self.storage.list(ROUNDS)
                if (r := round_of(k)) is not None and r > state.round
            }
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
            "data_version": self._data_version(state.round),
            "average_precision": metrics.get("average_precision"),
            "labeled_by": [
                f"{name}: {n:,} label(s), {pos:,} positive"
                for name, n, pos in labels_by_annotator(state.labeled.values())
            ],
            "new_label_files": len(files := self.label_files(state)),
            "label_files": files,
            "ignored_files": self.ignored_files(state),
            "interrupted_round": interrupted[0] if interrupted else None,
            "lock": holder(self.storage),
            "label_tool": self.config.label_tool,
            "waiting_for": waiting,
        }

    def _data_version(self, r: int) -> str | None:
        """The data version round ``r`` ran on, with its items and tombstoned items (None before
        round 0, or for a round written before rounds recorded it)."""
        key = self.keys(r).data
        if r < 0 or not self.storage.exists(key):
            return None
        data = self.storage.read_json(key)
        text = f"{data['version']} in round {r}: {data['items']:,} items, {data['u_items']:,} in U"
        return text + (f", {data['removed']:,} tombstoned" if data["removed"] else "")

    def next_step(
        self, target_metric: str = "", target_value: float = 0.0, state: State | None = None
    ) -> tuple[bool, str]:
        """Whether another round should run after the last committed one, and why (or why not):
        it stops when the budget is spent, the pool is exhausted, or ``target_metric`` (a key of
        metrics.json, e.g. average_precision or recall) reached ``target_value``. ``state``: the
        campaign's state, when the caller has just read it."""
        state = state if state is not None else self.state()
        if state.round < 0:
            return True, "round 0 has not run yet"
        metrics = self.storage.read_json(self.keys(state.round).metrics)
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
        self,
        poll_seconds: float,
        timeout_seconds: float,
        *,
        progress: bool | None = None,
        watch: Callable[[], str] | None = None,
    ) -> list[str]:
        """Poll the open round's inbox until a label file not ingested yet is there.

        Nothing is written here, so a timeout leaves the campaign exactly as it was: drop labels
        in the inbox later and resume (another run, or ``seals-al round``).

        Args:
            poll_seconds: seconds between polls.
            timeout_seconds: give up after this long.
            progress: print a line per poll (default: the campaign's setting).
            watch: called before each look into the inbox; it may bring labels there (Label
                Studio's pull, :func:`seals_al.labeltools.loop.wait_for_labels`) and returns a line
                saying how far along they are.

        Returns:
            The keys of the new label files.

        Raises:
            LabelsTimeout: nothing arrived within ``timeout_seconds``.
        """
        if not (math.isfinite(poll_seconds) and poll_seconds > 0):
            raise SealsError(f"--poll-seconds must be a positive number of seconds, got {poll_seconds}")
        if not (math.isfinite(timeout_seconds) and timeout_seconds >= 0):
            raise SealsError(f"--timeout-seconds must be 0 or more seconds, got {timeout_seconds}")
        state = self.state()
        deadline = time.monotonic() + timeout_seconds
        inbox = self.storage.where(self.inbox(state))
        polls, seen = 0, ""
        while True:
            seen = watch() if watch is not None else ""
            fresh = self.new_label_files(state)
            if fresh:
                return sorted(fresh)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabelsTimeout(
                    f"{inbox}/: no new labels after {timeout_seconds:g} s"
                    + (f" ({seen})" if seen else "")
                    + f"; the campaign is unchanged at round {state.round} ({len(state.pending)} "
                    f"example(s) waiting in {self.storage.where(self.keys(state.round).to_label)}). "
                    "Drop a label file there and run the pipeline again, or `seals-al round`, to resume."
                )
            polls += 1
            if progress if progress is not None else self.progress:
                where = seen or f"in {inbox}/"
                print(f"waiting for labels: {where} (poll {polls}, {remaining:.0f} s left)", flush=True)
            time.sleep(min(poll_seconds, remaining))


def report_key(key: str, data: bytes | Oversized) -> str:
    """Where the rejection report of this version of a label file goes."""
    return rejection_report(key, f"{data.size}-bytes" if isinstance(data, Oversized) else sha256(data))


def jsonl_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
