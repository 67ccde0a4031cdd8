"""The labeled set with where each label came from, as a file to hand over (``seals-al labeled``),
and who labeled how much (the report and ``status``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from seals_al.errors import SealsError

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
