"""What the Label Studio tool reads of tasks (annotation counts, update times), the campaign's record
of the tasks it pushed (``labelstudio.json``), and what push, pull and progress report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from seals_al.campaign.layout import (
    LABEL_STUDIO_RECORD,
)
from seals_al.errors import SealsError
from seals_al.labeltools.base import Progress
from seals_al.settings import is_count

if TYPE_CHECKING:
    from seals_al.storage.base import Storage


def count_of(task: dict, key: str) -> int:
    """An annotation count of a task (0 when absent or not a count)."""
    value = task.get(key, 0)
    return value if is_count(value) else 0


def is_annotated(task: dict) -> bool:
    """Whether a listed task has an annotation, cancelled (a skip) or not."""
    return count_of(task, "total_annotations") > 0 or count_of(task, "cancelled_annotations") > 0


def timestamp(value: object) -> datetime | None:
    """An ISO 8601 time as Label Studio writes them ("2026-12-07T22:12:07.435888Z"), or None."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def updated_after(task: dict, since: datetime) -> bool:
    """Whether a listed task changed after ``since``; a task without a readable time is looked at."""
    at = timestamp(task.get("updated_at"))
    return at is None or at >= since


def latest_update(tasks: Iterable[dict]) -> str | None:
    """The latest update among listed tasks (Label Studio's clock, never this machine's)."""
    times = [(at, t["updated_at"]) for t in tasks if (at := timestamp(t.get("updated_at"))) is not None]
    return max(times)[1] if times else None


# -- push, pull, progress ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Pushed:
    project: int
    project_url: str
    imported: int  # tasks created by this push
    batch_tasks: int  # tasks of the open batch in Label Studio
    deleted: list[str]  # items of the open batch whose task was deleted in Label Studio
    moved_from: str | None = None  # where the campaign was when its tasks were pushed, if not here

    def summary(self) -> str:
        return (
            f"Label Studio project {self.project_url}: {self.batch_tasks} task(s) of the open batch, "
            f"{self.imported} imported now" + deleted_note(self.deleted) + _moved(self.moved_from)
        )

    @property
    def where(self) -> str:
        return self.project_url

    @property
    def items(self) -> int:
        return self.batch_tasks


@dataclass(frozen=True)
class Pulled:
    labeled: int  # tasks of the open batch with a label (a majority)
    pending: int  # not annotated, skipped only, or tied
    deleted: list[str]
    written: str | None  # the inbox file written, None when nothing changed
    relabels: int  # labels that differ from what the campaign holds
    moved_from: str | None = None  # where the campaign was when its tasks were pushed, if not here

    def summary(self) -> str:
        where = f"written to {self.written}" if self.written else "nothing new to write"
        return (
            f"Label Studio: {self.labeled} task(s) of the open batch labeled, {self.pending} pending; {where}"
            + (f"; {self.relabels} label(s) changed" if self.relabels else "")
            + deleted_note(self.deleted)
            + _moved(self.moved_from)
        )


@dataclass(frozen=True)
class TaskProgress(Progress):
    """:class:`~seals_al.labeltools.base.Progress` with what only tasks have: the items whose task
    was deleted, and carried-over tasks whose annotations are all cancelled (not waited on)."""

    deleted: list[str] = field(default_factory=list)
    skipped_before: int = 0


def _moved(moved_from: str | None) -> str:
    if moved_from is None:
        return ""
    return (
        f"; tasks were pushed when the campaign was at {moved_from}: they are matched by the task "
        "ids the campaign recorded"
    )


def deleted_note(items: list[str]) -> str:
    if not items:
        return ""
    shown_items = ", ".join(map(repr, items[:5])) + (", ..." if len(items) > 5 else "")
    return f"; {len(items)} task(s) deleted in Label Studio (items {shown_items}) stay unlabeled"


def read_record(storage: Storage) -> dict:
    """``labelstudio.json``, checked (an error naming it when it is not such a record)."""
    if not storage.exists(LABEL_STUDIO_RECORD):
        return {"project": None, "tasks": {}}
    record = storage.read_json(LABEL_STUDIO_RECORD)
    if not _is_record(record):
        raise SealsError(
            f"{storage.where(LABEL_STUDIO_RECORD)}: not a Label Studio record (a project id, a "
            "task id per item pushed and the digests of pulled files); restore it (an earlier "
            "version of the object, or a backup): without it, pushed tasks are matched by the "
            "campaign's location only"
        )
    return record


def _is_record(record: object) -> bool:
    """labelstudio.json as :class:`LabelStudio` writes it."""
    if not isinstance(record, dict):
        return False
    project, tasks, pulled = record.get("project"), record.get("tasks"), record.get("pulled", {})
    listed = record.get("listed", {})
    return (
        (project is None or is_count(project))
        and isinstance(tasks, dict)
        and all(isinstance(entry, dict) and is_count(entry.get("task")) for entry in tasks.values())
        and isinstance(pulled, dict)
        and all(isinstance(digests, list) for digests in pulled.values())
        and isinstance(listed, dict)
        and all(r.isdigit() and isinstance(at, str) for r, at in listed.items())
    )
