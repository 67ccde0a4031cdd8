"""The round record: what one round did, in one schema for every place that shows it.

A simulation's ``summary.json`` (its "rounds" list), a campaign's ``rounds/NNN/metrics.json``, the
KFP Metrics artifact, the live table of ``seals-al simulate`` and ``run-local``, and the plots all
read and write :class:`RoundRecord`. A value that is not known (no ground truth, no selection in
the last simulated round) is left out of the JSON rather than written as null.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class RoundRecord:
    """One round: the labeled set it trained on, how the model did, and what it selected."""

    round: int
    labeled: int  # the labeled set the round trained on
    positives: int  # positives in that labeled set
    recall: float | None = None  # positives / positives of U (ground truth known)
    average_precision: float | None = None  # on the evaluation split (ground truth known)
    stopped: str | None = None  # why nothing could be selected (the pool ran out)
    selection_seconds: float | None = None  # None: no selection ran
    scored: int = 0  # examples scored by the strategy during selection
    pool_size: int = 0  # candidates when selection started (SEALS: |P|; global: |U \ L|)
    pool_fraction: float = 0.0  # pool_size / |U|
    batch: int = 0  # examples out for labeling after the round (carried over + selected)
    selected: int = 0  # examples selected this round
    knn_queries: int = 0  # kNN look-ups this round (expanding new labels and each pick)
    positives_total: int | None = None  # positives of U (ground truth known)
    # Data that changes (a campaign whose data grew or lost items; absent while it never did):
    items_added: int | None = None  # items new to the data since the last round
    items_removed: int | None = None  # items gone from the data or newly tombstoned since then
    index_rows: int | None = None  # rows of U in the index (tombstoned ones included, never picked)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> RoundRecord:
        """Read a record; keys this version does not know (or no longer writes) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The scalars the pipeline UI's Metrics artifact shows, in this order (round is its own output).
UI_METRICS = (
    "labeled",
    "positives",
    "recall",
    "average_precision",
    "pool_size",
    "pool_fraction",
    "selection_seconds",
    "scored",
    "batch",
    "knn_queries",
    "items_added",
    "items_removed",
    "index_rows",
)

# The live tables: (record key, header, format).
TABLE_COLUMNS = (
    ("round", "round", "{}"),
    ("labeled", "labels", "{:,}"),
    ("positives", "pos", "{:,}"),
    ("recall", "recall", "{:.3f}"),
    ("average_precision", "AP", "{:.3f}"),
    ("pool_size", "pool", "{:,}"),
    ("pool_fraction", "pool/U", "{:.1%}"),
    ("scored", "scored", "{:,}"),
    ("selection_seconds", "sel s", "{:.3f}"),
)


def table_cells(record: dict) -> list[str]:
    """A record's row of the live table; "-" where a value is not known."""
    return [fmt.format(record[key]) if record.get(key) is not None else "-" for key, _, fmt in TABLE_COLUMNS]
