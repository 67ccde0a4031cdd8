"""Reports: plots of campaigns (AP and recall vs labels, pool fraction vs round) and the live table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

TABLE_COLUMNS = (
    ("round", "round", "{}"),
    ("labeled", "labels", "{:,}"),
    ("positives_found", "pos", "{:,}"),
    ("recall", "recall", "{:.3f}"),
    ("average_precision", "AP", "{:.3f}"),
    ("pool_size", "pool", "{:,}"),
    ("pool_fraction", "pool/U", "{:.1%}"),
    ("scored", "scored", "{:,}"),
    ("selection_seconds", "sel s", "{:.3f}"),
)


STRATEGY_COLOURS = {"maxent": "tab:blue", "id": "tab:purple", "mlp": "tab:green", "random": "tab:grey"}


def run_label(summary: dict) -> str:
    config = summary["config"]
    return f"{config['strategy']} / {config['mode']}"


def round_table(title: str) -> Table:
    table = Table(title=title)
    for _, header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right")
    return table


def add_round_row(table: Table, record: dict) -> None:
    table.add_row(
        *(fmt.format(record[key]) if record[key] is not None else "-" for key, _, fmt in TABLE_COLUMNS)
    )


def load_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def plot_runs(
    summaries: Sequence[dict],
    path: str | Path,
    labels: Sequence[str] | None = None,
    reference: dict[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """Plot AP and recall against labels and pool fraction against round, one line per run.

    Args:
        summaries: simulation summaries (``{"config", "rounds"}``).
        path: the PNG to write.
        labels: legend labels (default: "strategy / mode").
        reference: horizontal AP reference lines, e.g. {"full supervision": 0.95}.
        title: figure title (default: the concept).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels is not None else [run_label(s) for s in summaries]
    fig, (ax_ap, ax_recall, ax_pool) = plt.subplots(1, 3, figsize=(15, 4.2))
    for summary, label in zip(summaries, labels, strict=True):
        rounds = summary["rounds"]
        config = summary["config"]
        style = {
            "linestyle": "--" if config.get("mode") == "global" else "-",
            "color": STRATEGY_COLOURS.get(config.get("strategy")),
            "marker": "o",
            "ms": 3,
            "label": label,
        }
        n = [r["labeled"] for r in rounds]
        ax_ap.plot(n, [r["average_precision"] for r in rounds], **style)
        ax_recall.plot(n, [r["recall"] for r in rounds], **style)
        ax_pool.plot([r["round"] for r in rounds], [100 * r["pool_fraction"] for r in rounds], **style)
    for name, value in (reference or {}).items():
        ax_ap.axhline(value, color="grey", linestyle=":", label=name)
    ax_ap.set(xlabel="labels", ylabel="average precision (eval split)", title="Model quality")
    ax_recall.set(xlabel="labels", ylabel="recall of positives in U", title="Positives found")
    ax_pool.set(xlabel="round", ylabel="% of U scored for selection", title="Candidate pool")
    for ax in (ax_ap, ax_recall, ax_pool):
        ax.grid(alpha=0.3)
    ax_ap.legend(fontsize=8)
    concept = summaries[0]["config"]["concept"] if summaries else ""
    fig.suptitle(title or f"SEALS on concept {concept!r}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
