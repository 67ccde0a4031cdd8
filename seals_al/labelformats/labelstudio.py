"""Label Studio's formats, with no network: reading an export back, and a batch as tasks.

In an export, each non-cancelled annotation is one vote and the majority is the label. A task
with no vote (not annotated yet, or only cancelled, i.e. skipped) or a tie is not labeled: it
stays out and is carried over into the next batch. A choice that is not a label (outside the
concept / ``not <concept>`` config) rejects the file, naming the task.

The other direction, a batch as tasks for a project (the labeling config, and the tasks with the
model's guess as a pre-annotation), is at the end; talking to a server is
:mod:`seals_al.labeltools.labelstudio`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from seals_al.errors import SealsError, shown
from seals_al.labelformats.answers import (
    Answer,
    Problem,
    Problems,
    RepeatedKey,
    agreement,
    answer_of,
    majority,
    parse_label,
    unique_keys,
)


def read_export(text: str, concept: str) -> tuple[list[Answer], int, Problems]:
    try:
        tasks = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        return [], 0, Problems(Problem(f"line {e.lineno}", f"invalid JSON: {e.msg}"))
    except RepeatedKey as e:
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
            answer = answer_of(task["data"].get("seals_id"), decided, concept, where, problems, provenance)
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
        "agreement": agreement(votes, decided),
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
