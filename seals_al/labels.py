"""Label files that people bring back: parsing and validation.

Accepted formats, by name: ``.csv`` (columns ``id,label``), ``.jsonl`` (``{"id": ..., "label": ...}``
per line) and ``.json``, a Label Studio export (a list of tasks whose ``data.seals_id`` names the
item and whose annotations each hold one ``choices`` result). A label is binary
(1/0, yes/no, true/false, positive/negative) or the concept's name (positive) or ``not <concept>``
(negative), case-insensitive.

Policy: a file with any hard error (malformed or truncated line, bad encoding, missing field,
invalid label, an id that is unknown or not in the open batch, the same id with two labels) is
rejected whole; :class:`LabelFileError` carries every problem with its line. A valid file may
label part of the batch; labels for already-labeled ids are relabels, reported, never silent.

In a Label Studio export, each non-cancelled annotation is one vote and the majority is the
label. A task with no vote (not annotated yet, or only cancelled, i.e. skipped) or a tie is not
labeled: it stays out and is carried over into the next batch. A choice that is not a label
(outside the concept / ``not <concept>`` config) rejects the file, naming the task.

The other direction, Label Studio's side of a batch (the labeling config, and the tasks with the
model's guess as a pre-annotation), is at the end; talking to a server is :mod:`seals_al.labelstudio`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from seals_al.errors import SealsError, shown

MAX_LABEL_FILE_BYTES = 16 * 2**20
POSITIVE = {"1", "true", "yes", "y", "positive", "pos"}
NEGATIVE = {"0", "false", "no", "n", "negative", "neg"}


@dataclass(frozen=True)
class Problem:
    where: str  # "line 3" or "task 2"
    message: str


MAX_PROBLEMS = 1000  # problems kept per file (the rest are counted): a broken file stays cheap to reject


class Problems:
    """The problems found in one file, in order: the first :data:`MAX_PROBLEMS` kept, every one
    counted, so a file of a million bad lines is rejected in bounded memory."""

    def __init__(self, *problems: Problem):
        self.kept: list[Problem] = []
        self.total = 0
        for problem in problems:
            self.append(problem)

    def append(self, problem: Problem) -> None:
        self.total += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(problem)

    def __bool__(self) -> bool:
        return self.total > 0

    def __iter__(self):
        return iter(self.kept)


class LabelFileError(SealsError):
    """A label file rejected whole; ``problems`` holds its hard errors (the first
    :data:`MAX_PROBLEMS` of ``total``)."""

    def __init__(self, name: str, problems: Problems | list[Problem]):
        if not isinstance(problems, Problems):
            problems = Problems(*problems)
        self.name = name
        self.problems = problems.kept
        self.total = problems.total
        first = "; ".join(f"{p.where}: {p.message}" for p in self.problems[:3])
        more = f" (and {self.total - 3:,} more)" if self.total > 3 else ""
        self.detail = f"rejected, nothing ingested: {first}{more}"
        super().__init__(f"{name}: {self.detail}")


@dataclass(frozen=True)
class Answer:
    item_id: str
    label: int
    where: str
    # Who gave it and how: "by" (annotators), "labeled_at", and from a labeling tool "tool",
    # "task", "annotations" and "agreement" (the share of its votes that chose the label).
    provenance: dict = field(default_factory=dict, compare=False)


@dataclass
class CheckedLabels:
    """What a valid label file contributes: its answers, new labels and relabels, and its report."""

    name: str
    sha256: str
    format: str
    answers: list[Answer]
    new: dict[str, int] = field(default_factory=dict)
    relabels: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (old, new)
    unchanged: int = 0
    pending_tasks: int = 0  # Label Studio tasks with no annotation yet

    def provenance(self) -> dict[str, dict]:
        """id -> who labeled it and how; every annotator a file names for an id (the same label
        given twice, by two people) is kept."""
        out: dict[str, dict] = {}
        for answer in self.answers:
            if not answer.provenance:
                continue
            kept = out.get(answer.item_id)
            if kept is None:
                out[answer.item_id] = dict(answer.provenance)
                continue
            by = kept.get("by", [])
            by = [*by, *(name for name in answer.provenance.get("by", []) if name not in by)]
            kept.update(answer.provenance)
            if by:
                kept["by"] = by
        return out

    def report(self) -> dict:
        return {
            "file": self.name,
            "sha256": self.sha256,
            "format": self.format,
            "answers": len(self.answers),
            "new": len(self.new),
            "relabels": [{"id": i, "old": o, "new": n} for i, (o, n) in sorted(self.relabels.items())],
            "unchanged": self.unchanged,
            "pending_tasks": self.pending_tasks,
        }


def parse_label(value: object, concept: str) -> int | None:
    """1, 0, or None when the value is not a label."""
    text = str(value).strip().lower()
    if text in POSITIVE or text == concept.lower():
        return 1
    if text in NEGATIVE or text == f"not {concept.lower()}" or text == f"not_{concept.lower()}":
        return 0
    return None


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
        return ("label-studio", *_read_label_studio(text, concept))
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


def _answer(
    item_id: object,
    value: object,
    concept: str,
    where: str,
    problems: Problems,
    provenance: dict | None = None,
) -> Answer | None:
    if item_id is None or not str(item_id).strip():
        problems.append(Problem(where, "missing id"))
        return None
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        problems.append(Problem(where, f"an id is a string, not a {type(item_id).__name__}"))
        return None
    label = parse_label(value, concept)
    if label is None:
        problems.append(Problem(where, f"invalid label {shown(value)} for id {shown(item_id)}"))
        return None
    return Answer(str(item_id).strip(), label, where, provenance or {})


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
            answer = _answer(row[at_id], row[at_label], concept, where, problems, _declared(found))
            if answer:
                answers.append(answer)
    except csv.Error as e:
        problems.append(Problem(f"line {reader.line_num}", f"malformed CSV ({e})"))
    return answers, 0, problems


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: ``{"label": 1, "label": 0}`` meant something,
    but not which of the two."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _read_jsonl(text: str, concept: str) -> tuple[list[Answer], int, Problems]:
    answers, problems = [], Problems()
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            last = number == len(lines) and not text.endswith("\n")
            problems.append(
                Problem(where, "truncated (no end of line)" if last else f"invalid JSON: {e.msg}")
            )
            continue
        except _RepeatedKey as e:
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
        answer = _answer(record.get("id"), record["label"], concept, where, problems, _declared(found))
        if answer:
            answers.append(answer)
    return answers, 0, problems


def _read_label_studio(text: str, concept: str) -> tuple[list[Answer], int, Problems]:
    try:
        tasks = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        return [], 0, Problems(Problem(f"line {e.lineno}", f"invalid JSON: {e.msg}"))
    except _RepeatedKey as e:
        return [], 0, Problems(Problem("file", f"key {shown(str(e))} appears more than once in an object"))
    if not isinstance(tasks, list):
        return [], 0, Problems(Problem("file", "expected a Label Studio export: a JSON list of tasks"))
    answers, problems, pending = [], Problems(), 0
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            problems.append(Problem(f"task {number}", 'expected a task object with "data"'))
            continue
        where = _task_name(task, number)
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            problems.append(Problem(where, '"annotations" must be a list of objects'))
            continue
        votes, voters = [], []
        for annotation in annotations:
            if annotation.get("was_cancelled"):
                continue  # skipped by its annotator: no vote
            choice = _single_choice(annotation)
            label = None if choice is None else parse_label(choice, concept)
            if label is None:
                what = "no single choice" if choice is None else f"the choice {shown(choice)}"
                name = f"annotation {annotation['id']}" if "id" in annotation else "an annotation"
                expected = f"{shown(concept)} or {shown('not ' + concept)}"
                problems.append(Problem(where, f"{name} has {what}; expected {expected}"))
                break
            votes.append(label)
            voters.append(annotation)
        else:
            decided = majority(votes)
            if decided is None:
                pending += 1  # not annotated yet, skipped only, or a tie: still out, carried over
                continue
            provenance = _annotated(task, voters, votes, decided)
            answer = _answer(task["data"].get("seals_id"), decided, concept, where, problems, provenance)
            if answer:
                answers.append(answer)
    return answers, pending, problems


def _annotated(task: dict, voters: list[dict], votes: list[int], decided: int) -> dict:
    """A Label Studio answer's provenance: the task, each vote's annotation and annotator, the
    latest vote's time, and how many of the votes chose the label."""
    by = [_annotator(a.get("completed_by")) for a in voters]
    times = [str(t) for a in voters if (t := a.get("updated_at") or a.get("created_at"))]
    out = {
        "tool": "label-studio",
        "task": task.get("id"),
        "annotations": [a.get("id") for a in voters],
        "by": [b for b in dict.fromkeys(by) if b],
        "agreement": round(sum(v == decided for v in votes) / len(votes), 4),
    }
    if times:
        out["labeled_at"] = max(times)
    return out


def _annotator(completed_by: object) -> str | None:
    """Who made a Label Studio annotation: the e-mail when the export has it, else its user id."""
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        return str(email) if email else _annotator(completed_by.get("id"))
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"label-studio user {completed_by}"
    return None


UNNAMED = "(no annotator named)"
# The labeled set as a CSV: the columns a label file is read by first (so it can be ingested
# again), then where each label came from.
LABELED_SET_COLUMNS = (
    "id",
    "label",
    "annotator",
    "labeled_at",
    "round",
    "source",
    "sha256",
    "tool",
    "task",
    "agreement",
)


def labeled_set_file(rows: Iterable[dict], name: str) -> bytes:
    """The labeled set with its provenance, as ``name``'s extension says: CSV, a line per label
    and annotator (:data:`LABELED_SET_COLUMNS`), or JSONL, an object per labeled item with every
    field (``by`` a list, the Label Studio annotation ids)."""
    check_labeled_set_name(name)
    rows = sorted(rows, key=lambda row: row["id"])
    if name.lower().endswith(".jsonl"):
        return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
    out = io.StringIO()
    writer = csv.DictWriter(out, LABELED_SET_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        for annotator in row.get("by") or [""]:
            writer.writerow({**row, "annotator": annotator})
    return out.getvalue().encode()


def check_labeled_set_name(name: str) -> None:
    if not name.lower().endswith((".csv", ".jsonl")):
        raise SealsError(f"{name}: write the labeled set as .csv or .jsonl")


def is_labeled_set(data: bytes) -> bool:
    """Whether these bytes are a labeled set :func:`labeled_set_file` wrote (what ``--out`` may replace)."""
    first = data.split(b"\n", 1)[0]
    if first == ",".join(LABELED_SET_COLUMNS).encode():
        return True
    try:
        row = json.loads(first)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(row, dict) and {"id", "label", "round", "source"} <= set(row)


def labels_by_annotator(rows: Iterable[dict]) -> list[tuple[str, int, int]]:
    """Who labeled how much, most first: (annotator, labels, positives) over labeled rows; a label
    two people gave counts for each, one whose file named nobody for :data:`UNNAMED`."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        for name in row.get("by") or [UNNAMED]:
            seen = counts.setdefault(str(name), [0, 0])
            seen[0] += 1
            seen[1] += int(row["label"])
    return sorted(((n, c[0], c[1]) for n, c in counts.items()), key=lambda t: (-t[1], t[0]))


def majority(votes: list[int]) -> int | None:
    """The label most annotators chose; None with no vote or a tie."""
    positives = sum(votes)
    if 2 * positives == len(votes):
        return None
    return int(2 * positives > len(votes))


def _task_name(task: dict, number: int) -> str:
    """How a problem names a task: its Label Studio id and item when the export has them."""
    task_id, item = task.get("id"), task["data"].get("seals_id")
    name = (
        f"task {task_id}" if isinstance(task_id, int) and not isinstance(task_id, bool) else f"task {number}"
    )
    return f"{name} (seals_id {shown(item)})" if item is not None else name


def _single_choice(annotation: dict) -> str | None:
    """The one choice of an annotation's first ``choices`` result, or None when it has not
    exactly one (a value of another JSON type counts as none)."""
    result = annotation.get("result") or []
    if not isinstance(result, list):
        return None
    choices = [r for r in result if isinstance(r, dict) and r.get("type") == "choices"]
    value = choices[0].get("value") if choices else None
    values = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        return None
    return values[0]


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
    """
    check_size(name, len(data))
    fmt, answers, pending, problems = read_label_file(name, data, concept)
    # Sets that look ids up are asked for every id they will be asked about, at once: the open
    # batch about every id, the others only about ids outside it.
    asked = [answer.item_id for answer in answers]
    if isinstance(open_batch, Prefetching):
        open_batch.prefetch(asked)
    outside = [i for i in asked if i not in open_batch and i not in labeled]
    for container in (known, in_u):
        if isinstance(container, Prefetching) and outside:
            container.prefetch(outside)
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
        if answer.item_id not in open_batch and answer.item_id not in labeled:
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
    checked = CheckedLabels(name, hashlib.sha256(data).hexdigest(), fmt, answers, pending_tasks=pending)
    for item_id, answer in seen.items():
        old = labeled.get(item_id)
        if old is None:
            checked.new[item_id] = answer.label
        elif old != answer.label:
            checked.relabels[item_id] = (old, answer.label)
        else:
            checked.unchanged += 1
    return checked


# -- Label Studio's side: the labeling config and the tasks a batch becomes --------------------------
@dataclass(frozen=True)
class Interface:
    """Where a project's config puts the choice (``from_name``), the text (``to_name``) and which
    task field the text is read from."""

    from_name: str = "label"
    to_name: str = "text"
    text_key: str = "text"


def label_config(concept: str) -> str:
    """A single choice between the concept and ``not <concept>`` about the item's text."""
    return (
        "<View>\n"
        f"  <Header value={quoteattr(f'Is this {concept}?')}/>\n"
        '  <Text name="text" value="$text"/>\n'
        '  <Choices name="label" toName="text" choice="single" showInline="true" required="true">\n'
        f'    <Choice value={quoteattr(concept)} hotkey="1"/>\n'
        f'    <Choice value={quoteattr(f"not {concept}")} hotkey="2"/>\n'
        "  </Choices>\n"
        "</View>\n"
    )


def interface_of(config: str, concept: str, where: str) -> Interface:
    """The interface of an existing project, checked to ask exactly concept / ``not <concept>``."""
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as e:
        raise SealsError(f"{where}: its labeling config is not valid XML ({e})") from e
    for choices in root.iter("Choices"):
        values = [c.get("value", "") for c in choices.iter("Choice")]
        labels = {parse_label(v, concept) for v in values}
        if len(values) == 2 and labels == {0, 1}:
            to_name = choices.get("toName", "")
            text = next((t for t in root.iter("Text") if t.get("name") == to_name), None)
            value = text.get("value", "") if text is not None else ""
            if value.startswith("$"):
                return Interface(choices.get("name", ""), to_name, value[1:])
    raise SealsError(
        f"{where}: its labeling config has no single choice between {shown(concept)} and "
        f"{shown('not ' + concept)} about a <Text> field; use a project seals-al created, or fix the config"
    )


def task_of(row: dict, concept: str, campaign: str | None = None, ui: Interface = Interface()) -> dict:
    """A batch row as a Label Studio task, with the model's guess as a prediction (pre-annotation);
    a push marks it with its campaign's URI (``meta.seals_campaign``), so two campaigns can
    share a project."""
    task: dict = {
        "data": {
            ui.text_key: row.get("text", ""),
            "seals_id": row["id"],
            "round": row["round"],
            "rank": row.get("rank"),
            "score": row["score"],
            "reached_from": row.get("reached_from"),
        },
        "meta": {"concept": concept, "strategy": row.get("strategy")},
    }
    if campaign is not None:
        task["meta"]["seals_campaign"] = campaign
    probability = row.get("probability")
    if probability is not None:
        guess = concept if probability >= 0.5 else f"not {concept}"
        task["predictions"] = [
            {
                "model_version": f"seals-al round {row['round']}",
                "score": probability if probability >= 0.5 else 1.0 - probability,
                "result": [
                    {
                        "from_name": ui.from_name,
                        "to_name": ui.to_name,
                        "type": "choices",
                        "value": {"choices": [guess]},
                    }
                ],
            }
        ]
    return task


def label_studio_tasks(batch: list[dict], concept: str) -> list[dict]:
    """The batch as tasks for a project with :func:`label_config` (the file a round publishes; it
    names no location, so a campaign's files do not depend on where it lives)."""
    return [task_of(row, concept) for row in batch]
