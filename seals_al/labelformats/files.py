"""Label files that people bring back: parsing and validation.

Accepted formats, by name: ``.csv`` (columns ``id,label``, optionally ``annotator`` and
``labeled_at``), ``.jsonl`` (``{"id": ..., "label": ...}`` per line, the same optional keys) and
``.json``, a Label Studio export (:mod:`seals_al.labelformats.labelstudio`).

Policy: a file with any hard error (malformed or truncated line, bad encoding, missing field,
invalid label, an id that is unknown or not in the open batch, the same id with two labels) is
rejected whole; :class:`~seals_al.labelformats.answers.LabelFileError` carries every problem with
its line. A valid file may label part of the batch; labels for already-labeled ids are relabels,
reported, never silent.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Container, Sequence
from typing import Protocol, runtime_checkable

from seals_al.errors import shown
from seals_al.labelformats.answers import (
    Answer,
    CheckedLabels,
    LabelFileError,
    Problem,
    Problems,
    RepeatedKey,
    agreement,
    answer_of,
    majority,
    unique_keys,
)
from seals_al.labelformats.labelstudio import read_export

MAX_LABEL_FILE_BYTES = 16 * 2**20


def read_label_file(name: str, data: bytes, concept: str) -> tuple[str, list[Answer], int, Problems]:
    """Parse a label file: (format, answers, pending Label Studio tasks, problems)."""
    if not data.strip():
        return "empty", [], 0, Problems(Problem("file", "empty"))
    try:
        text = data.decode("utf-8-sig")  # a leading BOM (Excel writes one) is not part of the header
    except UnicodeDecodeError as e:
        return "unknown", [], 0, Problems(Problem(f"byte {e.start}", f"not valid UTF-8 ({e.reason})"))
    lower = name.lower()
    if lower.endswith(".csv"):
        return ("csv", *_read_csv(text, concept))
    if lower.endswith(".jsonl"):
        return ("jsonl", *_read_jsonl(text, concept))
    if lower.endswith(".json"):
        return ("label-studio", *read_export(text, concept))
    return (
        "unknown",
        [],
        0,
        Problems(Problem("file", "unsupported label file type (use .csv, .jsonl or a Label Studio .json)")),
    )


# Optional columns (CSV) or keys (JSONL) of a label file: who gave the label, and when.
PROVENANCE_COLUMNS = ("annotator", "labeled_at")


def _declared(found: dict[str, str]) -> dict:
    """A file's own provenance columns as an answer's provenance."""
    out: dict = {"by": [found["annotator"]]} if "annotator" in found else {}
    if "labeled_at" in found:
        out["labeled_at"] = found["labeled_at"]
    return out


def _read_csv(text: str, concept: str) -> tuple[list[Answer], int, Problems]:
    answers, problems = [], Problems()
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = [h.strip() for h in next(reader, [])]
        if "id" not in header or "label" not in header:
            return (
                [],
                0,
                Problems(Problem("line 1", f"expected columns id,label; found {shown(','.join(header))}")),
            )
        repeated = sorted({h for h in header if h and header.count(h) > 1})
        if repeated:  # which of two "label" columns is meant? Neither is taken silently
            return (
                [],
                0,
                Problems(Problem("line 1", f"column(s) {shown(','.join(repeated))} appear more than once")),
            )
        at_id, at_label = header.index("id"), header.index("label")
        optional = {name: header.index(name) for name in PROVENANCE_COLUMNS if name in header}
        for row in reader:
            where = f"line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                problems.append(Problem(where, f"expected {len(header)} fields, found {len(row)}"))
                continue
            found = {name: row[at].strip() for name, at in optional.items() if row[at].strip()}
            answer = answer_of(row[at_id], row[at_label], concept, where, problems, _declared(found))
            if answer:
                answers.append(answer)
    except csv.Error as e:
        problems.append(Problem(f"line {reader.line_num}", f"malformed CSV ({e})"))
    return answers, 0, problems


def _read_jsonl(text: str, concept: str) -> tuple[list[Answer], int, Problems]:
    answers, problems = [], Problems()
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as e:
            last = number == len(lines) and not text.endswith("\n")
            problems.append(
                Problem(where, "truncated (no end of line)" if last else f"invalid JSON: {e.msg}")
            )
            continue
        except RepeatedKey as e:
            problems.append(Problem(where, f"key {shown(str(e))} appears more than once in the object"))
            continue
        if not isinstance(record, dict) or "label" not in record:
            problems.append(Problem(where, 'expected an object with "id" and "label"'))
            continue
        found = {name: record[name] for name in PROVENANCE_COLUMNS if record.get(name) not in (None, "")}
        wrong = [name for name, value in found.items() if not isinstance(value, str)]
        if wrong:
            problems.append(
                Problem(where, f"{shown(wrong[0])} is a string, not a {type(found[wrong[0]]).__name__}")
            )
            continue
        answer = answer_of(record.get("id"), record["label"], concept, where, problems, _declared(found))
        if answer:
            answers.append(answer)
    return answers, 0, problems


def check_size(name: str, size: int) -> None:
    """Reject a label file over the size limit by its size alone (it need not be read)."""
    if size > MAX_LABEL_FILE_BYTES:
        raise LabelFileError(
            name, [Problem("file", f"{size:,} bytes, over the limit of {MAX_LABEL_FILE_BYTES:,}")]
        )


@runtime_checkable
class Prefetching(Protocol):
    """A container of ids that looks them up (:class:`seals_al.prepared.IdSet`): asked for many
    ids at once, it reads them in one batch, and each later test reads nothing."""

    def prefetch(self, ids: Sequence[str]) -> None: ...


def check_label_file(
    name: str,
    data: bytes,
    concept: str,
    *,
    open_batch: Container[str],
    labeled: dict[str, int],
    known: Container[str],
    in_u: Container[str] | None = None,
    found_in: Container[str] | None = None,
) -> CheckedLabels:
    """Parse and validate a label file against the campaign; raise :class:`LabelFileError` on any
    hard error, else return what it adds (new labels and relabels).

    Args:
        name: the file's name (its extension says its format).
        data: its bytes.
        concept: the campaign's concept (a label may be spelled as it).
        open_batch: the ids it may label: the open batch (U, for the seed file).
        labeled: the labels known so far (a file may repeat or change them).
        known: every item id of the campaign.
        in_u: the ids of U, when given: an item outside it is named as held out for evaluation.
        found_in: ids a file may label outside the open batch (U: what a person found elsewhere);
            they are returned in ``found``. None: the open batch only.
    """
    check_size(name, len(data))
    fmt, answers, pending, problems = read_label_file(name, data, concept)
    # Sets that look ids up are asked for every id they will be asked about, at once: the open
    # batch about every id, the others only about ids outside it.
    asked = [answer.item_id for answer in answers]
    if isinstance(open_batch, Prefetching):
        open_batch.prefetch(asked)
    outside = [i for i in asked if i not in open_batch and i not in labeled]
    for container in (known, in_u, found_in):
        if isinstance(container, Prefetching) and outside:
            container.prefetch(outside)
    found: set[str] = set()
    answers, tied = _votes_of_annotators(answers)
    pending += len(tied)
    seen: dict[str, Answer] = {}
    for answer in answers:
        earlier = seen.get(answer.item_id)
        if earlier is not None and earlier.label != answer.label:
            problems.append(
                Problem(
                    answer.where,
                    f"id {shown(answer.item_id)} labeled {earlier.label} at {earlier.where} "
                    f"and {answer.label} here",
                )
            )
        seen.setdefault(answer.item_id, answer)
    for answer in answers + tied:
        if answer.item_id not in open_batch and answer.item_id not in labeled:
            if found_in is not None and answer.item_id in found_in:
                found.add(answer.item_id)
                continue
            if answer.item_id not in known:
                what = "is not an item of this campaign"
            elif in_u is not None and answer.item_id not in in_u:
                what = "is in the evaluation split, held out from labeling"
            else:
                what = "is not in the open batch"
            problems.append(Problem(answer.where, f"id {shown(answer.item_id)} {what}"))
    if not answers and not problems and not pending:
        problems.append(Problem("file", "no labels in the file"))
    if problems:
        raise LabelFileError(name, problems)
    checked = CheckedLabels(
        name, hashlib.sha256(data).hexdigest(), fmt, answers, pending_tasks=pending, found=found
    )
    for item_id, answer in seen.items():
        old = labeled.get(item_id)
        if old is None:
            checked.new[item_id] = answer.label
        elif old != answer.label:
            checked.relabels[item_id] = (old, answer.label)
        else:
            checked.unchanged += 1
    return checked


def _votes_of_annotators(answers: list[Answer]) -> tuple[list[Answer], list[Answer]]:
    """A file that names its annotators may label an item once per annotator: several people's
    answers are votes, and the majority is the label (with their agreement); a tie leaves the
    item unlabeled (pending, carried over). Returns the answers with each such item's votes made
    one answer, and the first answer of each item that tied. Two answers for one item by one
    annotator, or by nobody named, stay as they are (checked as any repeated id)."""
    by_item: dict[str, list[Answer]] = {}
    for answer in answers:
        by_item.setdefault(answer.item_id, []).append(answer)
    out: list[Answer] = []
    tied: list[Answer] = []
    for item, given in by_item.items():
        names = [by[0] if len(by := a.provenance.get("by") or []) == 1 else None for a in given]
        if len(given) == 1 or None in names or len(set(names)) < len(given):
            out += given
            continue
        votes = [a.label for a in given]
        decided = majority(votes)
        if decided is None:
            tied.append(given[0])
            continue
        times = [a.provenance["labeled_at"] for a in given if "labeled_at" in a.provenance]
        provenance = {"by": names, "agreement": agreement(votes, decided)}
        if times:
            provenance["labeled_at"] = max(times)
        out.append(Answer(item, decided, given[0].where, provenance))
    return out, tied
