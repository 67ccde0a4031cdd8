"""Label Studio as the campaign's labeling tool: push each batch as tasks, watch the
annotations, pull them back into the inbox.

What the campaign records, in ``labelstudio.json`` at its root: the project id, and for every
item pushed, its task id and the round that pushed it. One task per item: an example carried
over into a later batch keeps its task (and whatever annotations it already has).

Policies (the labels themselves are parsed by :mod:`seals_al.labelformats.labelstudio`):

- Each non-cancelled annotation is a vote; the majority is the label, a tie or a task with only
  cancelled annotations (skipped) is unlabeled and carried over.
- An annotation edited after it was ingested comes back at the next pull as a relabel (recorded
  in the round's ``relabels.jsonl``).
- A task deleted in Label Studio is reported by push and pull, never fatal, never re-created; its
  item stays unlabeled (carried over) until labeled some other way.
- A choice outside the config rejects the pull, naming the task; nothing is written.
- Down, slow, or a refused token: see :mod:`seals_al.labeltools.labelstudio.client`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from seals_al.campaign.layout import (
    CONFIG,
    LABEL_STUDIO_EXPORT,
    LABEL_STUDIO_LOCK,
    LABEL_STUDIO_RECORD,
    label_studio_export,
)
from seals_al.campaign.lease import Lease
from seals_al.errors import SealsError
from seals_al.labelformats.answers import LabelFileError
from seals_al.labelformats.files import check_label_file, read_label_file
from seals_al.labelformats.labelstudio import Interface, interface_of, label_config, task_of
from seals_al.labeltools.base import open_state
from seals_al.labeltools.labelstudio.client import (
    ENV_KEY,
    ENV_URL,
    Client,
    Connection,
    LabelStudioError,
    LabelStudioUnreachable,
    connection,
    pulled_task,
)
from seals_al.labeltools.labelstudio.tasks import (
    Pulled,
    Pushed,
    TaskProgress,
    count_of,
    deleted_note,
    is_annotated,
    latest_update,
    read_record,
    timestamp,
    updated_after,
)

if TYPE_CHECKING:
    from seals_al.campaign import Campaign, State


# A pull looks again at earlier tasks updated this long before the listing its last ingested file
# came from (an annotation saved while that listing was read may carry an earlier time).
RELISTED_SECONDS = 300.0


class LabelStudio:
    """A campaign's Label Studio project: what push, pull and the wait do."""

    name = "label_studio"
    title = "Label Studio"

    def __init__(self, campaign: Campaign, conn: Connection, client: Client | None = None):
        self.campaign = campaign
        self.client = client or Client(conn)
        self.url = conn.shown_url
        self.moved_from: str | None = None  # set when recorded tasks name another location

    @classmethod
    def of(cls, campaign: Campaign) -> LabelStudio:
        """The campaign's Label Studio (an error saying what to set when it has no URL)."""
        conn = connection(campaign.config.label_tool_url)
        if conn is None:
            raise SealsError(
                f"{campaign.storage.uri}: its labeling tool is Label Studio, but no URL is set: set "
                f"{ENV_URL} (or label_tool_url in the campaign) and {ENV_KEY}"
            )
        return cls(campaign, conn)

    # -- the record -------------------------------------------------------------------------------
    def _save(self, record: dict) -> None:
        self.campaign.storage.write_json(LABEL_STUDIO_RECORD, record)

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    def _project(self, record: dict) -> tuple[int, Interface]:
        """The project (created on first use, and recorded before any task is imported)."""
        concept = self.campaign.config.concept
        project_id = record["project"] or self._configured_project()
        if project_id:
            project = self.client.project(project_id)
            if project is None:
                raise SealsError(
                    f"{self.url}: project {project_id} (recorded in "
                    f"{self.campaign.storage.where(LABEL_STUDIO_RECORD)}, or label_tool_project) does "
                    "not exist; it was deleted, or the URL names another Label Studio"
                )
            ui = interface_of(project["label_config"], concept, f"{self.project_url(project_id)}")
        else:
            # One created before its id was recorded (a lost answer, a crash) is taken, not doubled.
            description = f"SEALS active learning for {concept!r}; campaign {self.campaign.storage.uri}"
            made = [p for p in self.client.projects() if p.get("description") == description]
            project = made[0] if made else None
            if project is None:
                project = self.client.create_project(
                    f"{concept} (seals-al)"[:50], label_config(concept), description
                )
            project_id, ui = project["id"], Interface()
        if record["project"] != project_id:
            record["project"] = project_id
            self._save(record)
        return project_id, ui

    def _ours(self, tasks: list[dict], record: dict) -> dict[str, dict]:
        """This campaign's tasks of the project, by item id: the tasks it recorded (by task id and
        item, wherever the campaign has moved since), those marked with its URI by a push that
        stopped before recording them, and unmarked ones (imported by hand from
        ``to_label.labelstudio.json``); never another campaign's. A recorded task marked with
        another URI means the campaign was moved or copied: :attr:`moved_from` says from where."""
        uri = self.campaign.storage.uri
        recorded = {entry["task"]: item for item, entry in record["tasks"].items()}
        ours = {}
        for t in tasks:
            data, meta = t.get("data"), t.get("meta")
            if not isinstance(data, dict) or not isinstance(data.get("seals_id"), str):
                continue
            mark = meta.get("seals_campaign", uri) if isinstance(meta, dict) else uri
            if recorded.get(t["id"]) == data["seals_id"]:
                if mark != uri:
                    self.moved_from = mark
            elif mark != uri:
                continue
            ours[data["seals_id"]] = t
        return ours

    def _configured_project(self) -> int | None:
        """``label_tool_project``: the id of an existing project to use, if given."""
        given = self.campaign.config.label_tool_project
        if given is None:
            return None
        if not str(given).isdigit() or int(given) <= 0:
            raise SealsError(
                f"{self.campaign.storage.where(CONFIG)}: label_tool_project must be a Label Studio "
                f"project id (a positive integer), got {given!r}"
            )
        return int(given)

    def record(self) -> dict:
        """The project the campaign pushed its batches to, and every task it pushed; no project
        and no task before the first push."""
        return read_record(self.campaign.storage)

    # -- push -----------------------------------------------------------------------------------
    @contextmanager
    def _syncing(self) -> Iterator[None]:
        """One push or pull of the campaign at a time (two pushes at once would import a batch
        twice), under a lease of its own: the campaign's lease is never held while Label Studio
        is waited on, so a slow or unreachable Label Studio never blocks a round."""
        with Lease(self.campaign.storage, key=LABEL_STUDIO_LOCK, busy="Label Studio push or pull is running"):
            yield

    def push(self) -> Pushed:
        """Import the open batch's items that have no task yet (every push after the first for a
        batch imports nothing), and record the task ids."""
        with self._syncing():
            state = open_state(self.campaign)
            record = self.record()
            project_id, ui = self._project(record)
            known, imported, uri = record["tasks"], 0, self.campaign.storage.uri
            for attempt in range(self.client.attempts):
                existing = self._ours(self.client.tasks(project_id), record)
                for item, task in existing.items():  # tasks an interrupted push imported, unrecorded
                    known.setdefault(item, {"task": task["id"], "round": task["data"].get("round")})
                new = [row for row in state.batch if row["id"] not in known]
                if not new:
                    break
                try:
                    ids = self.client.import_tasks(
                        project_id, [task_of(row, self.campaign.config.concept, uri, ui) for row in new]
                    )
                except LabelStudioUnreachable:
                    if attempt + 1 == self.client.attempts:
                        raise
                    self.client.pause(attempt + 1)  # then look again at what got in
                    continue
                if len(ids) != len(new):
                    raise LabelStudioError(
                        f"{self.url}: imported {len(new)} tasks into project {project_id} but got "
                        f"{len(ids)} task ids back; push again (it adopts what was imported)"
                    )
                for row, task_id in zip(new, ids, strict=True):
                    known[row["id"]] = {"task": task_id, "round": row["round"]}
                    existing[row["id"]] = {"id": task_id}
                imported += len(new)
                break
            deleted = sorted(row["id"] for row in state.batch if row["id"] not in existing)
            self._save(record)
            return Pushed(
                project_id,
                self.project_url(project_id),
                imported,
                len(state.batch) - len(deleted),
                deleted,
                self.moved_from,
            )

    def subscribe(self, url: str, headers: dict[str, str]) -> str:
        """Have Label Studio send the project's annotation events to ``url`` with ``headers`` (the
        listener's shared secret): one webhook per URL, created or brought up to date."""
        with self._syncing():
            record = self.record()
            project_id, _ = self._project(record)
            hooks = [w for w in self.client.webhooks(project_id) if w["url"] == url]
            hook = self.client.put_webhook(project_id, url, headers, hooks[0]["id"] if hooks else None)
            where = self.project_url(project_id)
            return f"Label Studio project {where}: webhook {hook} sends its annotation events to {url}"

    # -- progress and pull -------------------------------------------------------------------------
    def _batch_tasks(
        self, state: State, record: dict, tasks: dict[str, dict]
    ) -> tuple[list[dict], list[str]]:
        """The open batch's tasks that exist, and the items whose task was deleted."""
        found, deleted = [], []
        for row in state.batch:
            if row["id"] in tasks:
                found.append(tasks[row["id"]])
            elif row["id"] in record["tasks"]:
                deleted.append(row["id"])
        return found, sorted(deleted)

    def _pushed_record(self) -> dict:
        record = self.record()
        if not record["project"]:
            raise SealsError(
                f"{self.campaign.storage.uri}: nothing pushed to Label Studio yet; run "
                "`seals-al label-tool push` first"
            )
        return record

    def progress(self) -> TaskProgress:
        """How many tasks of the open batch have a non-cancelled annotation (one cheap listing).

        A task carried over from an earlier batch whose annotations are all cancelled was looked
        at and skipped; it is not waited on again (else one skip would stall every later wait
        that waits for the whole batch). It stays in the batch and counts once annotated."""
        state, record = open_state(self.campaign), self._pushed_record()
        tasks = self._ours(self.client.tasks(record["project"]), record)
        found, deleted = self._batch_tasks(state, record, tasks)
        carried = {row["id"] for row in state.batch if row.get("carried_over")}
        annotated = sum(1 for t in found if count_of(t, "total_annotations") > 0)
        skipped = sum(
            1
            for t in found
            if t["data"]["seals_id"] in carried
            and count_of(t, "total_annotations") == 0
            and count_of(t, "cancelled_annotations") > 0
        )
        note = deleted_note(deleted)
        if skipped:
            note = f"; {skipped} skipped in an earlier batch, not waited on" + note
        return TaskProgress(annotated, len(found) - skipped, note, deleted, skipped)

    def pull(self) -> Pulled:
        """Export the tasks the open round needs with their annotations into its inbox, as a Label
        Studio export the ingest validates: the open batch's annotated tasks, and earlier tasks
        updated since the listing the last ingested pull came from (relabels). Nothing is written
        when nothing changed, or when an annotation is invalid (the error names the task).

        What it reads and writes does not grow with the campaign: one listing of the project (a
        page at a time), an export of just those tasks (:data:`EXPORT_CHUNK` a request), and a file
        without the texts. The campaign's lease is not taken: the file is written whole at once,
        and a file that lands in an inbox whose round has just committed is taken in by the next
        round, as any label file is."""
        with self._syncing():
            state, record = open_state(self.campaign), self._pushed_record()
            listed = self._ours(self.client.tasks(record["project"]), record)
            found, deleted = self._batch_tasks(state, record, listed)
            since = self._relisted_since(record, state.round)
            asked = [
                t["id"]
                for item, t in sorted(listed.items())
                if (item in state.batch_ids and is_annotated(t))
                or (item in state.labeled and (since is None or updated_after(t, since)))
            ]
            exported = self._ours(self.client.export(record["project"], asked), record)
            kept = [pulled_task(t) for _, t in sorted(exported.items())]
            if not kept:  # nothing annotated yet, or every task deleted: nothing to take in
                return Pulled(0, len(found), deleted, None, 0, self.moved_from)
            return self._take_in(state, record, kept, found, deleted, latest_update(listed.values()))

    def _relisted_since(self, record: dict, round_: int) -> datetime | None:
        """Earlier tasks updated after this were not in an ingested pull (:data:`RELISTED_SECONDS`
        before the listing of the last file an earlier round's pull wrote); None: no such time is
        recorded (nothing pulled yet, or a record from before times were kept): every labeled task
        is looked at."""
        earlier = [int(r) for r in record.get("listed", {}) if int(r) < round_]
        if not earlier:
            return None
        at = timestamp(record["listed"][str(max(earlier))])
        return None if at is None else at - timedelta(seconds=RELISTED_SECONDS)

    def _take_in(
        self,
        state: State,
        record: dict,
        kept: list[dict],
        found: list[dict],
        deleted: list[str],
        listed_at: str | None,
    ) -> Pulled:
        """Check the pulled tasks as the ingest will, then write them into the open round's inbox
        (unless nothing changed since the last pull wrote)."""
        campaign = self.campaign
        data = json.dumps(kept, indent=1, sort_keys=True).encode()
        key = label_studio_export(state.round)
        labeled = {i: row["label"] for i, row in state.labeled.items()}
        try:
            checked = check_label_file(
                LABEL_STUDIO_EXPORT,
                data,
                campaign.config.concept,
                open_batch=state.batch_ids,
                labeled=labeled,
                known=set(state.labeled) | state.batch_ids,
            )
        except LabelFileError as e:
            raise SealsError(f"{self.project_url(record['project'])}: {e.detail}") from e
        batch_ids = {t["data"]["seals_id"] for t in found}
        answers = {a.item_id: a.label for a in checked.answers}
        news = bool(checked.new or checked.relabels)
        written, st = None, campaign.storage
        there = st.read_bytes(key) if st.exists(key) else None
        if there is not None and not self._pulled_here(record, state.round, there):
            if news:  # someone's own file by that name: never replaced
                raise SealsError(
                    f"{st.where(key)}: was not written by a pull (a person's own file?) and is "
                    "left as it is; give it another name in the inbox, then pull again"
                )
        # Written when it brings something new, or to replace an earlier pull's answers that changed.
        elif (news or there is not None) and self._changed(there, answers):
            # Recorded before it is written: a pull that stops between the two still knows its file.
            pulled = record.setdefault("pulled", {}).setdefault(str(state.round), [])
            pulled.append(hashlib.sha256(data).hexdigest())
            if listed_at is not None:
                record.setdefault("listed", {})[str(state.round)] = listed_at
            self._save(record)
            st.write_bytes(key, data)
            written = key
        return Pulled(
            labeled=len(batch_ids & answers.keys()),
            pending=len(batch_ids - answers.keys()),
            deleted=deleted,
            written=written,
            relabels=len(checked.relabels),
            moved_from=self.moved_from,
        )

    def _pulled_here(self, record: dict, round_: int, data: bytes) -> bool:
        """Whether a pull wrote these bytes into round ``round_``'s inbox (the record keeps the
        sha256 of each file a pull wrote). A file written by a version that kept no such record
        counts as a pull's when it is an export of tasks this campaign pushed, and nothing else."""
        pulled = record.get("pulled")
        if pulled is not None:
            return hashlib.sha256(data).hexdigest() in pulled.get(str(round_), [])
        try:
            tasks = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return False
        uri = self.campaign.storage.uri
        return (
            isinstance(tasks, list)
            and bool(tasks)
            and all(isinstance(t, dict) and isinstance(t.get("meta"), dict) for t in tasks)
            and all(t["meta"].get("seals_campaign") == uri for t in tasks)
        )

    def _changed(self, there: bytes | None, answers: dict[str, int]) -> bool:
        """Whether ``answers`` differ from those of the earlier pull's file, ``there`` (None: no
        file yet); an export's bytes change with every pull, e.g. its "created_ago" fields; its
        answers do not."""
        if there is None:
            return True
        _, before, _, _ = read_label_file(LABEL_STUDIO_EXPORT, there, self.campaign.config.concept)
        return {a.item_id: a.label for a in before} != answers
