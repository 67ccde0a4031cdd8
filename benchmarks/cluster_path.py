"""What running as a cluster runs costs: a round in containers vs kfp.local subprocesses vs one
`seals-al round` process, bytes each task downloads at 1M rows with and without the run's
workspace, and the image's size. Writes its section of docs/BENCHMARKS.md.

    make image BASE_IMAGE=...           # or make e2e, which builds it
    python benchmarks/cluster_path.py   # about 30 minutes; the 1M data of round_cost.py is reused

Everything shared lives on a GCS emulator on 127.0.0.1, as in `make e2e`.

1. **A round three ways** on CLINC150 (one round after the seeds, labels from the truth column):
   the one-round pipeline with every task in its own container (kfp.local DockerRunner), the same
   pipeline with kfp.local's subprocess runner, and `seals-al round` in one fresh process. Each
   starts from an empty cache, as a new run does. Interleaved, medians of ``--repeats``.
2. **Bytes downloaded per task at 1M rows**: the four stages of one round (ingest, train, select,
   report) as four processes, with one shared cache (a KFP workspace) or a new cache each (pods
   without one). Bytes downloaded = what each task added to its cache's downloads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # e2e/: its emulator and runner
from _common import DOCS, ROOT, reproducing_command, update_section, write_json

from e2e.run import BUCKET, copy_campaign, docker_runner, start_emulator
from e2e.run import run as run_pipeline
from seals_al.version import IMAGE

RESULTS = DOCS / "benchmarks" / "cluster_path.json"
STAGES = ("ingest", "train", "select", "report")
CLINC = ROOT / "data" / "clinc150" / "clinc150.csv"
ROUND_COST = Path("/tmp/seals-round-cost/n1000000")  # benchmarks/round_cost.py's 1M data


def seals(args: list[str], env: dict[str, str]) -> float:
    """One seals-al command in a fresh process; its wall seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "seals_al.cli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def downloaded(cache: Path) -> int:
    """Bytes a cache holds from object storage (published folders and downloaded files)."""
    return sum(
        p.stat().st_size for d in ("published", "downloads") for p in (cache / d).rglob("*") if p.is_file()
    )


def campaign_yaml(path: Path, items: str, store: str, index: str, seeds: Path, concept: str) -> Path:
    path.write_text(
        f"concept: {concept}\ndata: {items}\nseed_labels: {seeds}\nembeddings: {store}\nindex: {index}\n"
        "truth_column: label\nsplit_column: split\neval_split: test\nstrategy: maxent\nk: 100\n"
        "batch_size: 100\nbudget: 100000\n"
    )
    return path


def base_campaign(
    name: str, items: str, store: str, index: str, seeds: Path, concept: str, work: Path, env: dict[str, str]
) -> str:
    """A campaign on gs:// at round 0 (from the seeds; its first select built and published the
    neighbour graph), its batch labeled from the truth column."""
    uri = f"gs://{BUCKET}/bench/{name}"
    config = campaign_yaml(work / f"{name}.yaml", items, store, index, seeds, concept)
    seals(["init", str(config), uri], env)
    seals(["round", uri], env)
    seals(["oracle", uri], env)
    return uri


def round_three_ways(work: Path, env: dict[str, str], repeats: int) -> dict:
    from pipelines.one_round import seals_one_round
    from seals_al.dataset import index_over_u
    from seals_al.embed.pipeline import ensure_embeddings
    from seals_al.storage import open_storage

    gs = f"gs://{BUCKET}/clinc"
    open_storage(gs).write_bytes("clinc150.csv", CLINC.read_bytes())
    items, store, index = f"{gs}/clinc150.csv", f"{gs}/embeddings", f"{gs}/index"
    ensure_embeddings(items, store)
    index_over_u(items, store, index, split_column="split", recall_queries=0)
    seeds = ROOT / "examples" / "report_fraud" / "seeds.csv"
    base = base_campaign("clinc-base", items, store, index, seeds, "report_fraud", work, env)
    from kfp import local

    times: dict[str, list[float]] = {"containers": [], "subprocesses": [], "seals-al round": []}
    pod_env = {k: env[k] for k in ("STORAGE_EMULATOR_HOST",)}
    for n in range(repeats):
        for way in times:
            uri = f"{base}-{way.replace(' ', '-')}-{n}"
            copy_campaign(base, uri)
            started = time.perf_counter()
            if way == "seals-al round":
                seals(["round", uri], {**env, "SEALS_CACHE_DIR": tempfile.mkdtemp(dir=work)})
            else:
                runner = (
                    docker_runner(pod_env) if way == "containers" else local.SubprocessRunner(use_venv=False)
                )
                if not run_pipeline(runner, work / f"{way}-{n}", seals_one_round, campaign_uri=uri):
                    raise SystemExit(f"the one-round pipeline failed ({way})")
            times[way].append(time.perf_counter() - started)
    return {way: {"median_s": statistics.median(t), "runs_s": t} for way, t in times.items()}


def bytes_per_task(work: Path, env: dict[str, str]) -> dict:
    from seals_al.dataset import index_over_u
    from seals_al.published import publish
    from seals_al.storage import open_storage
    from seals_al.store import FORMAT as STORE_FORMAT

    if not (ROUND_COST / "data" / "store" / "manifest.json").is_file():
        raise SystemExit(f"{ROUND_COST}: run benchmarks/round_cost.py --sizes 1000000 first (its data)")
    gs = f"gs://{BUCKET}/n1m"
    open_storage(gs).write_bytes("items.csv", (ROUND_COST / "data" / "items.csv").read_bytes())
    items, store, index = f"{gs}/items.csv", f"{gs}/store", f"{gs}/index"
    publish(ROUND_COST / "data" / "store", store, STORE_FORMAT)
    index_over_u(items, store, index, "IVF4000_HNSW32,SQ8", split_column="split", recall_queries=0)
    base = base_campaign("n1m-base", items, store, index, ROUND_COST / "seeds.csv", "rare", work, env)
    result = {}
    for way in ("workspace", "none"):
        uri = f"{base}-{way}"
        copy_campaign(base, uri)
        shared = Path(tempfile.mkdtemp(dir=work))
        tasks = {}
        for stage in STAGES:
            cache = shared if way == "workspace" else Path(tempfile.mkdtemp(dir=work))
            before = downloaded(cache)
            args = [stage, uri] + (["--out", str(work / f"report-{way}")] if stage == "report" else [])
            seconds = seals(args, {**env, "SEALS_CACHE_DIR": str(cache)})
            tasks[stage] = {"bytes": downloaded(cache) - before, "seconds": seconds}
        result[way] = tasks
    return result


def image_size() -> int:
    done = subprocess.run(
        ["docker", "image", "inspect", IMAGE, "--format", "{{.Size}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def markdown(result: dict, command: str) -> str:
    ways = result["round"]
    fastest = ways["seals-al round"]["median_s"]
    lines = [
        "## The cluster path: containers, workspace, image",
        "",
        f"`{command}` (after `make image`): a GCS emulator on 127.0.0.1 holds everything shared, as in "
        "`make e2e`. 2 cores; medians of interleaved runs, each from an empty cache.",
        "",
        "**One round on CLINC150** (ingest, train, select, report), three ways:",
        "",
        "| way | seconds | vs `seals-al round` |",
        "|---|---|---|",
        *(f"| {w} | {v['median_s']:.1f} | {v['median_s'] / fastest:.1f}x |" for w, v in ways.items()),
        "",
        "**Bytes each task downloads at 1M rows** (a 1.5 GB store, an IVF index, the neighbour graph "
        "published by an earlier round), the stages as four processes:",
        "",
        "| task | with the run's workspace | without (a new cache each) |",
        "|---|---|---|",
    ]
    per = result["bytes_1m"]
    for stage in STAGES:
        ws, none = per["workspace"][stage], per["none"][stage]
        lines.append(
            f"| {stage} | {ws['bytes'] / 1e6:,.0f} MB, {ws['seconds']:.1f} s | "
            f"{none['bytes'] / 1e6:,.0f} MB, {none['seconds']:.1f} s |"
        )
    total = {w: sum(t["bytes"] for t in per[w].values()) for w in per}
    lines += [
        f"| **round** | **{total['workspace'] / 1e6:,.0f} MB** | **{total['none'] / 1e6:,.0f} MB** |",
        "",
        "Each task downloads a published folder at most once per cache: with the workspace only the "
        "first task that opens the data fetches the store and only select fetches the graph. Without "
        "it every task that opens the data fetches the whole store again, though preparing it needs "
        "only the store's id table and a round reads a few thousand of its rows.",
        "",
        f"**Image** `{IMAGE}`: {result['image_bytes'] / 1e9:.2f} GB (CPU torch, Beam, faiss, kfp, "
        "the two models).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seals-cluster-path"))
    args = parser.parse_args(argv)
    os.umask(0)  # folders kfp.local makes here are written by the containers' uid 10001 too
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    server, emulator = start_emulator()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator
    os.environ["SEALS_CACHE_DIR"] = str(args.work / "cache")  # this process's and the set-up's
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        result = {
            "image_bytes": image_size(),
            "round": round_three_ways(args.work, env, args.repeats),
            "bytes_1m": bytes_per_task(args.work, env),
        }
    finally:
        server.stop()
    write_json(RESULTS, result)
    command = reproducing_command("cluster_path.py", parser, args, "repeats")
    update_section("cluster_path", markdown(result, command))
    print(markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
