"""What a round costs end to end, as users and pods run it: `seals-al round` and each KFP stage
command (ingest, train, select, report), each in a fresh process, SEALS vs global, side by side
in one run, at each size in --sizes.

Data: synthetic clustered unit vectors (1,000 clusters, the rare concept is cluster 0 with 0.5% of
rows), 384-d, written as an embeddings store (what the embed component writes), with an items CSV
(id, text, label, split) whose evaluation split is a fixed 10,000 rows at every size. Campaign:
maxent, batch 100, k 100, index IVF (HNSW coarse quantizer; SQ8 codes, PQ48 at 10M), neighbour
graph on (the default). The first round of each new campaign is reported apart: it prepares the
data version (item columns, the index and the neighbour graph, once for both modes) unless the cache
in --work holds it from an earlier run, and the table says which. Then every round: the oracle
answers the open batch (not timed), and the round runs as one `seals-al round`
(once after emptying the page cache, where allowed, then rounds with it warm), then as the four
stage commands one after another.

Per command: wall time of the whole process (start to exit, imports included), peak RSS (of that
process alone: its VmHWM), bytes read through read() calls (/proc/self/io rchar: includes
Python's own module files, about 30 MB) and bytes of memory-mapped data files touched (resident
pages of the work folder's files at exit). Medians over rounds are reported.

Writes docs/benchmarks/round_cost.json and .png and its section of docs/BENCHMARKS.md.

    python benchmarks/round_cost.py                          # 100k, 1M and 10M (30 GB in --work)
    python benchmarks/round_cost.py --sizes 100000 1000000   # about 10 minutes the first time

The first run at 10M takes about an hour (data, index and neighbour graph); they are kept in
--work, and later runs take about 15 minutes.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, reproducing_command, run_measured, update_section, write_json

import seals_al
from seals_al.campaign import Campaign
from seals_al.dataset import Dataset
from seals_al.index.graph import NeighbourGraph
from seals_al.labeltools.oracle import label_open_batch
from seals_al.settings import DEFAULT_RAM_BUDGET_MB, DataConfig, RoundConfig
from seals_al.simulate import SimulationConfig, simulate
from seals_al.store import EmbeddingStore, l2_normalize
from seals_al.store_writer import StoreWriter

RESULTS = DOCS / "benchmarks" / "round_cost.json"
PLOT = DOCS / "benchmarks" / "round_cost.png"
CLUSTERS = 1000
RARE = 0.005
EVAL_ROWS = 10_000
CONCEPT = "rare"
STAGES = ("ingest", "train", "select", "report")
SIMULATE_UP_TO = 1_000_000  # simulate, memory-mapped vs in RAM, at sizes up to this
SIMULATE_ROUNDS = 6
SIMULATE_REPEATS = 3  # simulations per way, interleaved


def make_data(n: int, dim: int, seed: int, out: Path) -> tuple[Path, Path]:
    """Items CSV and an embeddings store of n clustered unit vectors, written chunk by chunk."""
    items, store = out / "items.csv", out / "store"
    if (store / "manifest.json").is_file() and items.is_file():
        return items, store
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(1, CLUSTERS, n).astype(np.int32)
    cluster[rng.random(n) < RARE] = 0
    is_eval = np.zeros(n, bool)
    is_eval[rng.choice(n, size=EVAL_ROWS, replace=False)] = True
    chunk = 500_000
    out.mkdir(parents=True, exist_ok=True)
    with (
        open(items.with_suffix(".tmp"), "w") as f,
        StoreWriter(store, dim=dim, model="synthetic", normalized=True) as writer,
        tqdm(total=n, desc=f"data {n:,}", unit="row") as bar,
    ):
        f.write("id,text,label,split\n")
        for start in range(0, n, chunk):
            c = cluster[start : start + chunk]
            ids = [f"i{i:08d}" for i in range(start, start + len(c))]
            noise = rng.normal(scale=0.6 / np.sqrt(dim), size=(len(c), dim)).astype(np.float32)
            writer.add(ids, l2_normalize(centres[c] + noise))
            labels = np.where(c == 0, CONCEPT, np.char.add("c", c.astype(str)))
            splits = np.where(is_eval[start : start + len(c)], "test", "train")
            f.writelines(
                f"{i},item {i} of cluster {cl},{lab},{sp}\n"
                for i, cl, lab, sp in zip(ids, c.tolist(), labels.tolist(), splits.tolist(), strict=True)
            )
            bar.update(len(c))
    items.with_suffix(".tmp").replace(items)
    return items, store


def seed_file(items: Path, n: int, seed: int, out: Path) -> Path:
    """5 positives and 95 negatives of U (the paper's seed set), ids only from the generator's order."""
    rng = np.random.default_rng(seed + 1)
    ids, labels, splits = [], [], []
    with open(items) as f:
        next(f)
        for line in f:
            item_id, _, label, split = line.rstrip("\n").split(",")
            ids.append(item_id)
            labels.append(label == CONCEPT)
            splits.append(split == "test")
    labels_a, splits_a = np.asarray(labels), np.asarray(splits)
    pos = rng.choice(np.flatnonzero(labels_a & ~splits_a), 5, replace=False)
    neg = rng.choice(np.flatnonzero(~labels_a & ~splits_a), 95, replace=False)
    path = out / "seeds.csv"
    path.write_text("id,label\n" + "".join(f"{ids[i]},{int(labels[i])}\n" for i in [*pos, *neg]))
    return path


def factory(n: int) -> str:
    """The index over U: IVF with an HNSW quantizer; SQ8 codes up to 1M rows, PQ at 10M (an SQ8
    graph build, 10M queries, took over an hour here; the round reads the graph either way)."""
    if n >= 5_000_000:
        return "IVF16384_HNSW32,PQ48"
    return f"IVF{min(4096, max(64, n // 250))}_HNSW32,SQ8"


def campaign_yaml(folder: Path, items: Path, store: Path, seeds: Path, mode: str, n: int) -> Path:
    path = folder / f"campaign-{mode}.yaml"
    path.write_text(
        f"concept: {CONCEPT}\ndata: {items}\nseed_labels: {seeds}\nembeddings: {store}\n"
        f"truth_column: label\nsplit_column: split\neval_split: test\nindex_factory: '{factory(n)}'\n"
        f"strategy: maxent\nmode: {mode}\nk: 100\nbatch_size: 100\nbudget: 100000\n"
    )
    return path


def run(args: list[str], env: dict, root: Path) -> dict:
    """One seals-al command in a fresh process: wall seconds, peak RSS, bytes read."""
    measured = run_measured(args, env, root)
    if measured.pop("exit_code") != 0:
        raise SystemExit(f"seals-al {' '.join(args)} exited non-zero")
    return measured


def measure_size(n: int, rounds: int, work: Path, env: dict) -> dict:
    folder = work / f"n{n}"
    items, store = make_data(n, 384, 0, folder / "data")
    seeds = seed_file(items, n, 0, folder)
    result: dict = {"rows": n, "factory": factory(n), "modes": {}}
    for mode in ("seals", "global"):
        uri = folder / f"campaign-{mode}"
        shutil.rmtree(uri, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "seals_al.cli",
                "init",
                str(campaign_yaml(folder, items, store, seeds, mode, n)),
                str(uri),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        before = prepared_versions(env)
        first = run(["round", str(uri)], env, work)  # prepares the data version unless --work has it
        first["prepared"] = prepared_versions(env) > before
        whole, stages = [], {s: [] for s in STAGES}
        label_open_batch(Campaign(str(uri), progress=False))
        cold = run(["round", str(uri)], env, work) if drop_caches() else None
        for r in tqdm(range(2 * rounds), desc=f"{n:,} {mode}", unit="round"):
            label_open_batch(Campaign(str(uri), progress=False))
            if r < rounds:
                whole.append(run(["round", str(uri)], env, work))
            else:
                for stage in STAGES:
                    extra = ["--out", str(folder / f"report-{mode}")] if stage == "report" else []
                    stages[stage].append(run([stage, str(uri), *extra], env, work))
        result["modes"][mode] = {
            "first_round": first,
            "cold_round": cold,
            "round": _median(whole),
            "round_best": min(whole, key=lambda one: one["seconds"]),
            "rounds": whole,
            "stages": {s: _median(v) for s, v in stages.items()},
            "stages_best": {s: min(one["seconds"] for one in v) for s, v in stages.items()},
            "labeled_after": json.loads(
                (uri / "rounds" / f"{2 * rounds + 1:03d}" / "metrics.json").read_text()
            )["labeled"],
        }
    if n <= SIMULATE_UP_TO:
        # Interleaved, so that a slow minute of the machine falls on all three ways alike.
        times: dict[str, list[float]] = {"default": [], "mapped": [], "copied": []}
        for _ in range(SIMULATE_REPEATS):
            for way, extra in (("default", []), ("mapped", ["--ram-budget-mb", "0"])):
                out = folder / f"simulate-{way}"
                times[way] += simulate_selection(out, items, store, n, env, work, extra)
            times["copied"] += simulate_copied(items, store, n, env)
        result["simulate"] = {
            way: {"selection_seconds": statistics.median(t), "rounds": t} for way, t in times.items()
        }
    return result


def simulate_args(items: Path, store: Path, n: int) -> list[str]:
    return [
        "--data", str(items), "--embeddings", str(store), "--concept", CONCEPT, "--truth-column", "label",
        "--split-column", "split", "--index-factory", factory(n), "--strategy", "maxent", "--k", "100",
        "--batch-size", "100", "--rounds", str(SIMULATE_ROUNDS),
    ]  # fmt: skip


def simulate_selection(
    out: Path, items: Path, store: Path, n: int, env: dict, work: Path, extra: list
) -> list[float]:
    """`seals-al simulate` (SEALS) in a fresh process: the selection time of each round."""
    run(["simulate", *simulate_args(items, store, n), "--out", str(out), *extra], env, work)
    return _selection_times(json.loads((out / "summary.json").read_text()))


def simulate_copied(items: Path, store: Path, n: int, env: dict) -> list[float]:
    """The same simulation with the embeddings and neighbour lists copied into RAM, as the
    selection-cost benchmark times them (in this process: the reference for the two above)."""
    config = DataConfig(
        data=str(items), embeddings=str(store), truth_column="label", split_column="split",
        index_factory=factory(n), cache_dir=env["SEALS_CACHE_DIR"],
    )  # fmt: skip
    mapped = Dataset.prepare(config, progress=False, access="mapped")
    graph = mapped.neighbours(100, progress=False)
    copied = replace(mapped.prepared, store=EmbeddingStore.open(store, in_memory=True))
    dataset = Dataset(config, copied, progress=False, access="ram")
    dataset._graphs[100] = NeighbourGraph.open(graph.path, in_memory=True)  # the lists, copied too
    sim = SimulationConfig(
        concept=CONCEPT, learning=RoundConfig(k=100, batch_size=100), rounds=SIMULATE_ROUNDS
    )
    return _selection_times(simulate(dataset, sim, None, progress=False))


def _selection_times(summary: dict) -> list[float]:
    return [r["selection_seconds"] for r in summary["rounds"] if r.get("selection_seconds")]


def prepared_versions(env: dict) -> int:
    """How many data versions the cache holds prepared."""
    folder = Path(env["SEALS_CACHE_DIR"]) / "prepared"
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def drop_caches() -> bool:
    """Empty the page cache (root only), so the next command reads from disk as a new pod on a
    new node would; False where that is not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def _median(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["rows"] for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, colour in (("seals", "tab:blue"), ("global", "tab:orange")):
        ax1.plot(
            sizes, [r["modes"][mode]["round"]["seconds"] for r in results], "o-", color=colour, label=mode
        )
        ax2.plot(
            sizes, [r["modes"][mode]["round"]["peak_rss_mb"] for r in results], "o-", color=colour, label=mode
        )
    for ax, title in ((ax1, "seals-al round, wall seconds"), (ax2, "seals-al round, peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows (U + evaluation split)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def first_note(first: dict) -> str:
    if "prepared" not in first:
        return ""
    return " (prepared the data)" if first["prepared"] else " (data prepared by an earlier run)"


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "## A whole round, end to end (`benchmarks/round_cost.py`)",
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Every figure is one fresh process, as a user or a pod runs it "
        "(imports included), with the page cache warm: the median over rounds and, in brackets, the "
        "fastest (this VM's timings vary by 30% from minute to minute; the fastest is the least "
        "disturbed); and one round after emptying the page cache (cold: what a new pod on a new node "
        "reads from disk, Python's own modules included). Data: synthetic 384-d clustered vectors (rare "
        "concept 0.5%), an embeddings store and an items CSV, a fixed 10,000-row evaluation split; "
        "maxent, batch 100, k 100, IVF with HNSW quantizer (SQ8 codes; PQ48 at 10M rows), neighbour "
        "graph on.",
        "",
        "| rows | mode | `seals-al round` s | peak RSS MB | read() MB | mapped MB touched "
        "| ingest s | train s | select s | report s | cold cache s | first round of a new campaign s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for mode in ("seals", "global"):
            m = r["modes"][mode]
            s = m["stages"]
            cold = f"{m['cold_round']['seconds']:.2f}" if m["cold_round"] else "n/a"
            best = m["stages_best"]
            lines.append(
                f"| {r['rows']:,} | {mode} | "
                f"{m['round']['seconds']:.2f} ({m['round_best']['seconds']:.2f}) | "
                f"{m['round']['peak_rss_mb']:.0f} | "
                f"{m['round']['rchar'] / 1e6:.0f} | {m['round']['mapped'] / 1e6:.0f} | "
                + " | ".join(f"{s[stage]['seconds']:.2f} ({best[stage]:.2f})" for stage in STAGES)
                + f" | {cold} | {m['first_round']['seconds']:.1f}{first_note(m['first_round'])} |"
            )
    lines += ["", "Ratios in the same run (from the medians; from the fastest in brackets):", ""]

    def ratio(top: dict, bottom: dict) -> str:
        return (
            f"{top['round']['seconds'] / bottom['round']['seconds']:.2f}x "
            f"({top['round_best']['seconds'] / bottom['round_best']['seconds']:.2f}x)"
        )

    for r in results:
        seals, glob = r["modes"]["seals"], r["modes"]["global"]
        lines.append(
            f"- {r['rows']:,} rows: global / SEALS round time {ratio(glob, seals)}, "
            f"peak RSS {glob['round']['peak_rss_mb'] / seals['round']['peak_rss_mb']:.1f}x"
        )
    for a, b in itertools.pairwise(results):
        seals = ratio(b["modes"]["seals"], a["modes"]["seals"])
        glob = ratio(b["modes"]["global"], a["modes"]["global"])
        lines.append(f"- {a['rows']:,} -> {b['rows']:,} rows: SEALS round time x{seals}, global x{glob}")
    simulated = [r for r in results if "simulate" in r]
    if simulated:
        lines += [
            "",
            f"`seals-al simulate` (SEALS, {SIMULATE_ROUNDS} rounds in one process, {SIMULATE_REPEATS} "
            "simulations per way, interleaved), median selection time over all their rounds. "
            "By default it maps the embeddings and neighbour lists with every page read in at once "
            f"when the embeddings take at most {DEFAULT_RAM_BUDGET_MB:,} MB (`--ram-budget-mb`), and "
            "maps them to be read as touched otherwise. The reference: the same simulation with both "
            "copied into RAM, as `benchmarks/selection_cost.py` times selection.",
            "",
            "| rows | default ms | memory-mapped (`--ram-budget-mb 0`) ms | copied into RAM ms "
            "| default / copied | mapped / copied |",
            "|---|---|---|---|---|---|",
        ]
        for r in simulated:
            ms = {k: 1000 * v["selection_seconds"] for k, v in r["simulate"].items()}
            lines.append(
                f"| {r['rows']:,} | {ms['default']:.1f} | {ms['mapped']:.1f} | {ms['copied']:.1f} | "
                f"{ms['default'] / ms['copied']:.2f}x | {ms['mapped'] / ms['copied']:.2f}x |"
            )
    lines += ["", "![round cost](benchmarks/round_cost.png)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per way of running (whole, stages)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/seals-round-cost"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEALS_CACHE_DIR": str(args.work / "cache"), "HF_HUB_OFFLINE": "1"}
    # An installed package is byte-compiled (pip does it); so is this checkout's, so that no timed
    # command compiles the package's modules first (PYTHONDONTWRITEBYTECODE may forbid caching them).
    compileall.compile_dir(Path(seals_al.__file__).parent, quiet=1)
    results = [measure_size(n, args.rounds, args.work, env) for n in args.sizes]
    write_json(RESULTS, results)
    plot(results)
    command = reproducing_command("round_cost.py", parser, args, "sizes", "rounds")
    update_section("round_cost", markdown(results, command))
    print(markdown(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
