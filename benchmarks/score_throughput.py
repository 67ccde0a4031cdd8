"""Scoring throughput: the scorer over stored embeddings vs the raw classifier over the same
matrix, side by side in one run; then what users run, ``seals-al score`` in a fresh process.

1. The scoring itself. A store of --rows random unit vectors (384-d, float32, shards of 100,000
   rows) is written once and read warm (in the page cache). Every side applies the same logistic
   regression and gives P(concept), checked equal:

   - raw: ``LinearModel.predict_proba(matrix)`` over the whole matrix already in memory;
   - in process: :func:`seals_al.score.stored.score_in_process`, what ``seals-al score`` and the
     score component run by default: each range of rows scored where it lies in its memory-mapped
     shard, into one array;
   - Beam: :func:`seals_al.score.pipeline.score_with_beam`, what ``seals-al score`` runs when given
     Beam options: a Beam pipeline (FnApiRunner, in-process) of ranges, RunInference loading the
     exported model (JSON) and mapping the store once per worker, each range's scores written to a
     file the driver reads back in order. Wall clock, pipeline start included.

   The three run one after another, --repeats times; the medians are reported.

2. The whole command. A campaign over --command-rows items (clustered unit vectors, an items CSV,
   5 positive and 95 negative seeds; Flat index, no neighbour graph: the index is not what is
   measured) makes its round 0 once; then ``seals-al score CAMPAIGN --out ...`` runs in a fresh
   process (imports, the exported model, the data, scoring, ranking, the Parquet file), with no
   Beam option and with ``--runner=FnApiRunner``, alternately, --command-repeats times each.

Writes its section of docs/BENCHMARKS.md.

    python benchmarks/score_throughput.py --workdir /tmp   # about 10 minutes, 13 GB on disk
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import publish, reproducing_command, run_measured
from round_cost import make_data, seed_file

import seals_al
from seals_al.export import ExportedModel, write_model
from seals_al.score.corpus import read_scores
from seals_al.score.pipeline import score_with_beam
from seals_al.score.stored import CHUNK_ROWS, score_in_process
from seals_al.store import EmbeddingStore
from seals_al.store_writer import StoreWriter
from seals_al.train import LinearModel

DIM = 384
BEAM_IMPORTS = "import apache_beam; from apache_beam.ml.inference.base import RunInference"


def write_random_store(path: Path, rows: int, rng: np.random.Generator) -> None:
    with StoreWriter(path, dim=DIM, model="random", normalized=True) as writer:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            x = rng.normal(size=(n, DIM)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            writer.add([f"i{i}" for i in range(start, start + n)], x, np.arange(start, start + n))


WAYS = ("raw", "numpy_mapped", "in_process", "beam")


def measure_scoring(sizes: list[int], repeats: int, chunk_rows: int, tmp: Path) -> tuple[list[dict], float]:
    """Per size: the median and best seconds of each way; and Beam's median time for one row."""
    rng = np.random.default_rng(0)
    classifier = LinearModel(rng.normal(size=DIM) / np.sqrt(DIM), -1.0)
    model = ExportedModel(classifier, {"model": "random", "dim": DIM}, "c", 0, 0, 0, "", [], "")
    store_path = tmp / "store"
    write_random_store(store_path, max(sizes), rng)
    model_uri = write_model(model, str(tmp / "model.json"))
    shards = sorted(store_path.glob("shard-*.npy"))
    matrix = np.concatenate([np.load(p) for p in shards])

    def raw(n: int) -> np.ndarray:
        return classifier.predict_proba(matrix[:n])

    def numpy_mapped(n: int) -> np.ndarray:
        """The raw classifier over the same store read with numpy's own memory map, shard by shard."""
        out, left = [], n
        for path in shards:
            if left <= 0:
                break
            x = np.load(path, mmap_mode="r")[:left]
            out.append(classifier.predict_proba(x))
            left -= len(x)
        return np.concatenate(out)

    def in_process(n: int) -> np.ndarray:
        store = EmbeddingStore.open(store_path, access="mapped")  # as a fresh process opens it
        return score_in_process(store, np.arange(n), model, chunk_rows=chunk_rows, progress=False)

    def beam(n: int) -> np.ndarray:
        work = Path(tempfile.mkdtemp(dir=tmp))
        return score_with_beam(str(store_path), np.arange(n), model_uri, str(work), chunk_rows=chunk_rows)

    ways = {"raw": raw, "numpy_mapped": numpy_mapped, "in_process": in_process, "beam": beam}

    def timed(way: str, n: int) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        scores = ways[way](n)
        return time.perf_counter() - started, scores

    timed("beam", 1)  # the first pipeline of a process also initializes Beam's runner: not a per-run cost
    beam_start = statistics.median(timed("beam", 1)[0] for _ in range(repeats))
    rows = []
    for n in sorted(sizes):
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        expected = raw(n)
        for r in range(repeats):
            for way in WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]:  # each way first in turn
                seconds, scores = timed(way, n)
                times[way].append(seconds)
                np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
        rows.append(
            {"rows": n, **{way: statistics.median(t) for way, t in times.items()}}
            | {f"{way}_best": min(t) for way, t in times.items()}
        )
    return rows, beam_start


def measure_command(n: int, repeats: int, tmp: Path) -> dict:
    """``seals-al score`` in a fresh process over an n-item campaign: median wall s and peak RSS,
    without and with a Beam option; and the median time of a fresh process importing Beam."""
    items, store = make_data(n, DIM, 0, tmp / "command")
    seeds = seed_file(items, n, 0, tmp / "command")
    config = tmp / "command" / "campaign.yaml"
    config.write_text(
        f"concept: rare\ndata: {items}\nseed_labels: {seeds}\nembeddings: {store}\ntruth_column: label\n"
        "split_column: split\neval_split: test\nindex_factory: Flat\nknn_graph: false\n"
        "strategy: maxent\nk: 100\nbatch_size: 100\nbudget: 100000\n"
    )
    uri = tmp / "command" / "campaign"
    env = {**os.environ, "SEALS_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "seals_al.cli"]
    subprocess.run([*cli, "init", str(config), str(uri)], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*cli, "round", str(uri)], env=env, check=True, stdout=subprocess.DEVNULL)
    ways = {"in_process": [], "beam": ["--runner=FnApiRunner"]}
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, extra in ways.items():
            out = tmp / "command" / f"scores-{way}.parquet"
            measured = run_measured(["score", str(uri), "--out", str(out), *extra], env, tmp)
            if measured["exit_code"] != 0:
                raise SystemExit(f"seals-al score {' '.join(extra)} exited {measured['exit_code']}")
            if len(read_scores(str(out))["id"]) != n:
                raise SystemExit(f"seals-al score {' '.join(extra)} did not rank all {n:,} items")
            runs[way].append(measured)
    summary = {
        way: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
        }
        for way, rs in runs.items()
    }
    imports = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", BEAM_IMPORTS], env=env, check=True, stderr=subprocess.DEVNULL)
        imports.append(time.perf_counter() - started)
    summary["beam_import_seconds"] = statistics.median(imports)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--command-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=21, help="runs of each way of scoring")
    parser.add_argument("--command-repeats", type=int, default=5, help="runs of each whole command")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--workdir", default=None, help="where the data are written (default: a temp folder)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # An installed package is byte-compiled (pip does it); so is this checkout's, so that no timed
    # command compiles the package's modules first.
    compileall.compile_dir(Path(seals_al.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rows, beam_start = measure_scoring(args.rows, args.repeats, args.chunk_rows, Path(tmp))
        command = measure_command(args.command_rows, args.command_repeats, Path(tmp))

    reproduce = reproducing_command(
        "score_throughput.py",
        parser,
        args,
        "rows",
        "command_rows",
        "repeats",
        "command_repeats",
        "chunk_rows",
    )
    lines = [
        "## Scoring throughput: the scorer over stored embeddings vs the raw classifier",
        "",
        f"`{reproduce}`: 384-d float32 rows (random unit vectors, shards of 100,000 rows, in the page "
        f"cache), the same logistic regression on every side, {args.repeats} runs of each (each way "
        "first in turn), one process, 2 cores. Median seconds; the ratios are the raw classifier's "
        "time over the scorer's, from the medians and (in brackets) from the best runs.",
        "",
        "| rows | raw classifier, matrix in memory | raw classifier, numpy's memory map of the store "
        "| in process (the default) | ratio to in memory | ratio to numpy's map "
        "| Beam pipeline (with Beam options) | ratio to in memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n, raw_s, mapped_s, local_s, beam_s = (row[k] for k in ("rows", *WAYS))

        def ratio(base: str, way: str, row: dict = row) -> str:
            return f"{row[base] / row[way]:.2f}x ({row[base + '_best'] / row[way + '_best']:.2f}x)"

        lines.append(
            f"| {n:,} | {raw_s:.3f} s | {mapped_s:.3f} s | {local_s:.3f} s ({n / local_s:,.0f} rows/s) "
            f"| **{ratio('raw', 'in_process')}** | **{ratio('numpy_mapped', 'in_process')}** "
            f"| {beam_s:.3f} s | {ratio('raw', 'beam')} |"
        )
    first, last = rows[0], rows[-1]
    growth = ""
    if len(rows) > 1 and last["beam"] > first["beam"]:
        marginal = (last["rows"] - first["rows"]) / (last["beam"] - first["beam"])
        growth = (
            f"; past {first['rows']:,} rows it adds rows at {marginal:,.0f} rows/s, "
            f"{marginal * last['raw'] / last['rows']:.2f}x the raw classifier's rate"
        )
    local, beam = command["in_process"], command["beam"]
    lines += [
        "",
        "The goal is at least 0.9x. The raw classifier in memory reads nothing: its matrix is "
        "already in the process's own memory. The two others read the store as it is on disk, "
        "from the page cache: numpy's memory map with no product code, and the scorer, which opens "
        "the store and scores each range where it lies in its memory-mapped shard, as a fresh "
        "`seals-al score` process does. Both pay for mapping the file's pages.",
        "",
        f"A Beam pipeline costs {beam_start:.3f} s to start whatever the size (scoring 1 row){growth}. "
        "That start is why `seals-al score` scores in its own process unless given Beam options.",
        "",
        f"What users run, `seals-al score CAMPAIGN --out scores.parquet` in a fresh process over a "
        f"{args.command_rows:,}-item campaign (imports, the exported model, the data, scoring, "
        f"ranking and the Parquet file of id, score, rank), median of {args.command_repeats} runs each, "
        "the two ways alternately:",
        "",
        "| | wall time | peak RSS |",
        "|---|---|---|",
        f"| in process (no Beam option) | {local['seconds']:.2f} s | {local['peak_rss_mb']:,.0f} MB |",
        f"| Beam pipeline (`--runner=FnApiRunner`) | {beam['seconds']:.2f} s "
        f"| {beam['peak_rss_mb']:,.0f} MB |",
        "",
        f"The command without Beam takes {local['seconds'] / beam['seconds']:.2f}x the time of the one "
        f"with it. A fresh Python process that only imports Beam (and RunInference) takes "
        f"{command['beam_import_seconds']:.2f} s; the default path never imports it.",
    ]
    publish("score-throughput", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
