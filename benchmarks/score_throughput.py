"""Scoring throughput: the Beam scorer over stored embeddings vs the raw classifier over the same
matrix in memory, side by side in one run.

A store of --rows random unit vectors (384-d, float32, shards of 100,000 rows) is written once and
read warm (in the page cache). Both sides apply the same logistic regression and give P(concept):

- raw: ``LinearModel.predict_proba(matrix)`` over the whole matrix already in memory;
- stored: :func:`seals_al.score.score_positions`, what ``seals-al score`` and the score component run:
  a Beam pipeline (FnApiRunner, in-process) whose elements are ranges of storage positions;
  RunInference loads the exported model (JSON) and maps the store once per worker and scores each
  range where it lies in the mapped shard; each range's scores are written to a file, which the
  driver reads back in order. Wall clock, pipeline start included.

Each side runs --repeats times; the median is reported. Writes its section of docs/BENCHMARKS.md.

    python benchmarks/score_throughput.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import publish, reproducing_command

from seals_al.export import ExportedModel, write_model
from seals_al.score import CHUNK_ROWS, score_positions
from seals_al.store import StoreWriter
from seals_al.train import LinearModel

DIM = 384


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--workdir", default=None, help="where the store is written (default: a temp folder)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    rng = np.random.default_rng(0)
    classifier = LinearModel(rng.normal(size=DIM) / np.sqrt(DIM), -1.0)
    model = ExportedModel(classifier, {"model": "random", "dim": DIM}, "c", 0, 0, 0, "", [], "")
    most = max(args.rows)

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        store_path = Path(tmp) / "store"
        with StoreWriter(store_path, dim=DIM, model="random", normalized=True) as writer:
            for start in range(0, most, 100_000):
                n = min(100_000, most - start)
                x = rng.normal(size=(n, DIM)).astype(np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                writer.add([f"i{i}" for i in range(start, start + n)], x, np.arange(start, start + n))
        model_uri = write_model(model, str(Path(tmp) / "model.json"))
        matrix = np.concatenate([np.load(p) for p in sorted(store_path.glob("shard-*.npy"))])

        def beam_seconds(n: int) -> tuple[float, np.ndarray]:
            work = Path(tempfile.mkdtemp(dir=tmp))
            started = time.perf_counter()
            scores = score_positions(
                str(store_path),
                np.arange(n, dtype=np.int64),
                model_uri,
                str(work),
                chunk_rows=args.chunk_rows,
            )
            return time.perf_counter() - started, scores

        fixed = statistics.median(beam_seconds(1)[0] for _ in range(args.repeats))
        for n in sorted(args.rows):
            raw_times, stored_times = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                raw = classifier.predict_proba(matrix[:n])
                raw_times.append(time.perf_counter() - started)
                seconds, stored = beam_seconds(n)
                stored_times.append(seconds)
                np.testing.assert_allclose(stored, raw, rtol=1e-5, atol=1e-7)  # the same scores
            rows.append((n, statistics.median(raw_times), statistics.median(stored_times)))

    command = reproducing_command("score_throughput.py", parser, args, "rows", "repeats", "chunk_rows")
    lines = [
        "## Scoring throughput: stored embeddings through Beam vs the raw classifier",
        "",
        f"`{command}`: 384-d float32 rows (random unit vectors, shards of 100,000 rows, in the page "
        f"cache), the same logistic regression, median of {args.repeats} runs, one process, 2 cores.",
        "",
        "| rows | raw classifier, matrix in memory | Beam scorer over the store | ratio (raw s / Beam s) |",
        "|---|---|---|---|",
    ]
    for n, raw_s, stored_s in rows:
        lines.append(
            f"| {n:,} | {raw_s:.3f} s ({n / raw_s:,.0f} rows/s) "
            f"| {stored_s:.3f} s ({n / stored_s:,.0f} rows/s) | **{raw_s / stored_s:.2f}x** |"
        )
    (n1, _, t1), (n2, raw2, t2) = rows[0], rows[-1]
    marginal = (n2 - n1) / (t2 - t1) if len(rows) > 1 and t2 > t1 else float("nan")
    whole = ", ".join(f"{raw_s / stored_s:.2f}x at {n:,} rows" for n, raw_s, stored_s in rows)
    lines += [
        "",
        f"Starting the Beam pipeline costs {fixed:.3f} s whatever the size (scoring 1 row). Past "
        f"{n1:,} rows the Beam scorer adds rows at {marginal:,.0f} rows/s (from the {n1:,} and "
        f"{n2:,} runs), **{marginal * raw2 / n2:.2f}x** the raw classifier's rate. The goal (at least "
        f"0.9x) is not met: whole runs give {whole}. Each range of rows is scored in place in the "
        "mapped shard (no vector crosses a Beam stage); a profile at 1M rows put most of the rest in "
        "building and starting the pipeline.",
    ]
    publish("score-throughput", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
