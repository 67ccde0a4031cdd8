"""Reports: plots of runs (AP and recall vs labels, pool fraction vs round), the live table of
round records, and a campaign round's report as the pipeline UI shows it (metrics, curves, an
HTML page, a Markdown summary)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from seals_al.errors import SealsError, shown
from seals_al.labelformats.labeled_set import labels_by_annotator
from seals_al.record import TABLE_COLUMNS, UI_METRICS, table_cells
from seals_al.storage.files import (
    atomic_path,
    check_output_folder,
    write_json_atomic,
    write_text_atomic,
    written_as,
)

if TYPE_CHECKING:
    from seals_al.campaign import Campaign

STRATEGY_COLOURS = {"maxent": "tab:blue", "id": "tab:purple", "mlp": "tab:green", "random": "tab:grey"}


def run_label(summary: dict) -> str:
    config = summary["config"]
    return f"{config['strategy']} / {config['mode']}"


def round_table(title: str) -> Table:
    """The live table of round records (simulate, run-local)."""
    table = Table(title=title)
    for _, header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right")
    return table


def add_round_row(table: Table, record: dict) -> None:
    table.add_row(*table_cells(record))


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
    path = Path(path)
    check_plot_path(path)
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
    fig.suptitle(title or f"SEALS on concept {shown(concept)}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_plot_path(path: Path) -> None:
    """A plot goes to a .png path that is new or holds an earlier PNG (replaced); anything else
    there is refused before any work."""
    if path.suffix.lower() != ".png":
        raise SealsError(f"{path}: a plot is written as PNG; give a path ending in .png")
    if path.is_dir():
        raise SealsError(f"{path}: is a folder; give the path of a .png file")
    if path.exists():
        with open(path, "rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                raise SealsError(
                    f"{path}: exists and is not a PNG; it would be replaced, so choose another --out"
                )


# -- one round of a campaign: what the pipeline UI shows ---------------------------------------
@dataclass(frozen=True)
class RoundReport:
    """Everything the UI artifacts of one committed round are made of."""

    round: int
    metrics: dict  # the scalars of UI_METRICS that the round has
    classification: dict | None  # ROC points and confusion matrix (train.classification_curves)
    html: str
    markdown: str
    keep_going: bool  # whether another round should run (Campaign.next_step)
    reason: str


def round_report(
    campaign: Campaign, target_metric: str = "", target_value: float = 1.0, batch_rows: int = 50
) -> RoundReport:
    """The report of the last committed round: metrics, curves, an HTML page with plots of the
    campaign so far and the batch with its scores, a Markdown summary, and whether to go on
    (budget left, pool not exhausted, ``target_metric`` below ``target_value``)."""
    # Everything the report reads, with the state, in one batch (on gs://, one round trip): the
    # rounds commit one after another, so rounds 0..r are the committed ones.
    state = campaign.state(
        also=lambda last: [
            *(campaign.keys(i).metrics for i in range(last + 1)),
            *([campaign.keys(last).evaluation, campaign.keys(last).relabels] if last >= 0 else []),
        ]
    )
    if state.round < 0:
        raise SealsError(f"{campaign.storage.uri}: no committed round to report on")
    r = state.round
    st, keys = campaign.storage, campaign.keys(r)
    history = [st.read_json(campaign.keys(i).metrics) for i in range(r + 1)]
    metrics = {k: history[-1][k] for k in UI_METRICS if history[-1].get(k) is not None}
    evaluation = st.read_json(keys.evaluation)
    batch = [json.loads(x) for x in st.read_text(keys.to_label).splitlines() if x]
    cfg, learning = campaign.config, campaign.config.learning
    title = f"SEALS campaign {cfg.concept!r}, round {r}"
    plot = history_svg(history, title)
    rows = "".join(
        f"<tr><td>{row.get('rank', '')}</td><td>{html.escape(str(row['id']))}</td>"
        f"<td>{row.get('score', float('nan')):.4f}</td><td>{html.escape(str(row.get('reached_from')))}</td>"
        f"<td>{html.escape(str(row.get('text', ''))[:200])}</td></tr>"
        for row in batch[:batch_rows]
    )
    scalars = "".join(f"<tr><th>{k}</th><td>{_fmt(v)}</td></tr>" for k, v in metrics.items())
    who = labels_by_annotator(state.labeled.values())  # provenance: who gave the labels so far
    annotators = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{pos}</td></tr>" for name, n, pos in who
    )
    taken = campaign.intake(r)  # the files this round took in, relabels, carried-over examples
    found = sum(1 for row in state.labeled.values() if row.get("outside_batch"))
    if found:
        taken.append(f"{found} label(s) so far found by people outside the batches")
    intake = "".join(f"<li>{html.escape(line)}</li>" for line in taken)
    page = (
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h2>{html.escape(title)}</h2><p>{html.escape(st.uri)} &middot; strategy {learning.strategy}, "
        f"mode {learning.mode}, k {learning.k}, batch {learning.batch_size}, budget {cfg.budget}</p>"
        f"<table border='1' cellpadding='3'>{scalars}</table>"
        f"<div>{plot}</div>"
        f"<h3>Taken in this round</h3><ul>{intake}</ul>"
        "<h3>Who labeled</h3><table border='1' cellpadding='3'><tr><th>annotator</th><th>labels</th>"
        f"<th>positives</th></tr>{annotators}</table>"
        f"<h3>Batch to label ({len(batch)} examples, first {min(len(batch), batch_rows)})</h3>"
        "<table border='1' cellpadding='3'><tr><th>rank</th><th>id</th><th>score</th>"
        f"<th>reached from</th><th>text</th></tr>{rows}</table></body></html>"
    )
    lines = [
        f"## {title}",
        "",
        f"Campaign `{st.uri}`; batch in `{st.where(keys.to_label)}`; labels go to `{st.where(keys.inbox)}/`.",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in metrics.items()),
    ]
    lines += ["", "Taken in this round:", "", *(f"- {line}" for line in taken)]
    lines += ["", "| annotator | labels | positives |", "|---|---|---|"]
    lines += [f"| {name} | {n} | {pos} |" for name, n, pos in who]
    keep_going, reason = campaign.next_step(target_metric, target_value, state)
    lines += ["", f"Next: {reason}"]
    markdown = "\n".join(lines) + "\n"
    return RoundReport(r, metrics, evaluation.get("classification"), page, markdown, keep_going, reason)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# The round report's chart is SVG written here rather than a matplotlib PNG: the report stage
# would otherwise spend about a second importing matplotlib to draw three small line charts.
_PANEL_W, _PANEL_H, _TOP = 390, 290, 34
_MARGIN = {"left": 62, "right": 26, "top": 14, "bottom": 44}


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)):  # one value, to rounding: a range around it
        pad = abs(lo) / 10 or 0.5
        lo, hi = max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    return [first + i * step for i in range(math.ceil((hi - first) / step - 1e-9) + 1)]


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:,.{decimals}f}"


def _svg_panel(x: list[float], y: list[float], xlabel: str, ylabel: str, colour: str, left: int) -> str:
    """One line chart: axes with round ticks, a grid, the line with its points (a point that is
    not a finite number is left out)."""
    m = _MARGIN
    w, h = _PANEL_W - m["left"] - m["right"], _PANEL_H - m["top"] - m["bottom"]
    x0, y0 = left + m["left"], _TOP + m["top"]
    finite = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    x, y = [a for a, _ in finite] or [0.0], [b for _, b in finite] or [0.0]
    xt, yt = _ticks(min(x), max(x)), _ticks(min(y), max(y))

    def px(v: float) -> float:
        return x0 + w * (v - xt[0]) / (xt[-1] - xt[0])

    def py(v: float) -> float:
        return y0 + h - h * (v - yt[0]) / (yt[-1] - yt[0])

    out = [f"<rect x='{x0}' y='{y0}' width='{w}' height='{h}' fill='none' stroke='#444'/>"]
    for v in xt:
        out.append(
            f"<line x1='{px(v):.1f}' y1='{y0}' x2='{px(v):.1f}' y2='{y0 + h}' stroke='#ddd'/><text "
            f"x='{px(v):.1f}' y='{y0 + h + 16}' text-anchor='middle'>{_tick_label(v, xt[1] - xt[0])}</text>"
        )
    for v in yt:
        out.append(
            f"<line x1='{x0}' y1='{py(v):.1f}' x2='{x0 + w}' y2='{py(v):.1f}' stroke='#ddd'/><text "
            f"x='{x0 - 6}' y='{py(v) + 4:.1f}' text-anchor='end'>{_tick_label(v, yt[1] - yt[0])}</text>"
        )
    xy = [(px(a), py(b)) for a, b in finite]
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
    out.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='2'/>")
    out += [f"<circle cx='{a:.1f}' cy='{b:.1f}' r='3.5' fill='{colour}'/>" for a, b in xy]
    out.append(f"<text x='{x0 + w / 2}' y='{y0 + h + 36}' text-anchor='middle'>{html.escape(xlabel)}</text>")
    out.append(
        f"<text transform='translate({left + 16},{y0 + h / 2}) rotate(-90)' text-anchor='middle'>"
        f"{html.escape(ylabel)}</text>"
    )
    return "".join(out)


def history_svg(history: list[dict], title: str) -> str:
    """The campaign so far as an inline SVG: positives found, average precision on the
    evaluation split (when every round has it) and the pool's share of U, against labels."""
    labeled = [m["labeled"] for m in history]
    panels = [(labeled, [m["positives"] for m in history], "labels", "positives found", "#1f77b4")]
    if all(m.get("average_precision") is not None for m in history):
        ap = [m["average_precision"] for m in history]
        panels.append((labeled, ap, "labels", "average precision (eval split)", "#2ca02c"))
    pool = [100 * m["pool_fraction"] for m in history]
    panels.append((labeled, pool, "labels", "pool, % of U", "#ff7f0e"))
    width = _PANEL_W * len(panels)
    body = "".join(_svg_panel(*panel, left=i * _PANEL_W) for i, panel in enumerate(panels))
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{_TOP + _PANEL_H}' "
        f"viewBox='0 0 {width} {_TOP + _PANEL_H}' font-family='sans-serif' font-size='12' "
        f"role='img' aria-label='campaign so far'><text x='{width / 2}' y='20' text-anchor='middle' "
        f"font-size='15'>{html.escape(title)}</text>{body}</svg>"
    )


REPORT_FILES = ("report.html", "summary.md", "metrics.json", "keep_going")


def check_report_folder(out: Path) -> None:
    """A report folder (``seals-al report --out``) is new, empty, or an earlier report's: a folder
    holding anything else, a campaign's round folder for one, is refused."""

    def ours(parts: tuple[str, ...], path: Path) -> bool:
        return len(parts) == 1 and path.is_file() and any(written_as(parts[0], name) for name in REPORT_FILES)

    check_output_folder(out, ours, "report")


def write_round_report(report: RoundReport, out: Path) -> None:
    """The report's files for an orchestrator (the Argo template reads ``keep_going``), each
    written atomically into ``out`` after :func:`check_report_folder`."""
    check_report_folder(out)
    write_text_atomic(out / "report.html", report.html)
    write_text_atomic(out / "summary.md", report.markdown)
    write_json_atomic(out / "metrics.json", {**report.metrics, "round": report.round})
    write_text_atomic(out / "keep_going", json.dumps(report.keep_going))
