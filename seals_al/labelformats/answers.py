"""What a label file says, whatever its format: an answer per item, the problems found, and the
file's contribution once checked against a campaign (:class:`CheckedLabels`).

A label is binary (1/0, yes/no, true/false, positive/negative) or the concept's name (positive)
or ``not <concept>`` (negative), case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seals_al.errors import SealsError, shown

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
    found: set[str] = field(default_factory=set)  # ids labeled outside the open batch (found by a person)

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
            "found_outside_batch": len(self.found),
        }


def parse_label(value: object, concept: str) -> int | None:
    """1, 0, or None when the value is not a label."""
    text = str(value).strip().lower()
    if text in POSITIVE or text == concept.lower():
        return 1
    if text in NEGATIVE or text == f"not {concept.lower()}" or text == f"not_{concept.lower()}":
        return 0
    return None


def majority(votes: list[int]) -> int | None:
    """The label most annotators chose; None with no vote or a tie."""
    positives = sum(votes)
    if 2 * positives == len(votes):
        return None
    return int(2 * positives > len(votes))


def agreement(votes: list[int], decided: int) -> float:
    """The share of the votes that chose the label decided (4 decimals)."""
    return round(sum(v == decided for v in votes) / len(votes), 4)


def answer_of(
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


class RepeatedKey(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: ``{"label": 1, "label": 0}`` meant something,
    but not which of the two."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise RepeatedKey(key)
        seen[key] = value
    return seen
