"""What a round on a cluster reads from object storage: every task in a new pod (an empty cache),
sharing nothing but a bucket. Writes two sections of docs/BENCHMARKS.md.

    python benchmarks/cluster_path.py                     # 1M x 384, 1M x 128, 10M x 128; about 2 h
    python benchmarks/cluster_path.py --sizes 1000000:384 --skip-containers   # about 20 minutes

Everything shared lives on fake-gcs-server on 127.0.0.1 (its on-disk backend, in --work), as in
`make e2e`.

1. **Reads per task, SEALS and global side by side** (section ``cluster_path``), at each size in
   ``--sizes`` (rows:dimension): synthetic clustered unit vectors (benchmarks/round_cost.py's data:
   a rare concept of 0.5%, a fixed 10,000-row evaluation split) as an items CSV and an embeddings
   store published on the bucket, an IVF index built over U and published, and one campaign per
   mode (maxent, batch 100, k 100). Round 0 prepares the data and builds the neighbour graph,
   each published for every later task. Then ``--rounds`` rounds, each as its four stage commands
   (ingest, train, select, report) in fresh processes with a new, empty cache each, the oracle
   answering the batch in between. Per task: the GET requests and bytes the process fetched (its
   own count, ``$SEALS_IO_STATS_DIR``), the GETs the server logged meanwhile, the batches they
   came in, and the wall time. A modelled time for real object storage: each batch of n requests
   costs ceil(n / 32) round trips of 30 ms, and bytes come at 100 MB/s.
2. **Cold against warm** (1M rows, SEALS): the same rounds on a copy of the campaign, every task
   with one cache that already holds the store, the graph and the prepared data (what a pod with
   a warm disk has); the committed round files of both copies are compared, timing fields aside.
3. **A round three ways on CLINC150** (section ``cluster_containers``, after `make image`): the
   one-round pipeline with every task in its own container (kfp.local DockerRunner), the same
   pipeline with kfp.local's subprocess runner, and `seals-al round` in one fresh process; and the
   image's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # e2e/ and tests/: the emulator, the runner
from _common import DOCS, ROOT, reproducing_command, update_section, write_json

from e2e.run import campaign_files, differences
from seals_al.ranges import BANDWIDTH, LATENCY, Stats
from seals_al.version import IMAGE

RESULTS = DOCS / "benchmarks" / "cluster_path.json"
PLOT = DOCS / "benchmarks" / "cluster_path.png"
STAGES = ("ingest", "train", "select", "report")
BUCKET = "seals-bench"
CLINC = ROOT / "data" / "clinc150" / "clinc150.csv"
CONCURRENCY = 32  # the model of real object storage: ranges.LATENCY per round trip, ranges.BANDWIDTH


def modelled(batches: list[list[int]]) -> float:
    return Stats(batches=[(n, size) for n, size in batches]).modelled_seconds(concurrency=CONCURRENCY)


def seals(args: list[str], env: dict[str, str], stats: Path | None = None) -> float:
    """One seals-al command in a fresh process; its wall seconds."""
    extra = {"SEALS_IO_STATS_DIR": str(stats)} if stats is not None else {}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "seals_al.cli", *args],
        env={**env, **extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"seals-al {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def task(args: list[str], env: dict[str, str], cache: Path, server, work: Path) -> dict:
    """One task as a pod runs it: a fresh process with the cache given; what it fetched."""
    stats = Path(tempfile.mkdtemp(dir=work, prefix="stats-"))
    gets = server.gets()
    seconds = seals(args, {**env, "SEALS_CACHE_DIR": str(cache)}, stats)
    server_gets = server.gets() - gets
    (record,) = [json.loads(p.read_text()) for p in stats.glob("*.json")]
    shutil.rmtree(stats)
    return {
        "seconds": seconds,
        "requests": record["requests"],
        "server_gets": server_gets,
        "bytes": record["bytes"],
        "batches": len(record["batches"]),
        "modelled_seconds": modelled(record["batches"]),
    }


def factory(n: int, dim: int) -> str:
    """The index over U: IVF with an HNSW quantizer (SQ8 codes; 4-bit fast-scan PQ at 10M, whose
    graph build takes minutes, not an hour). A round reads the graph, never the index."""
    if n >= 5_000_000:
        return f"IVF16384_HNSW32,PQ{dim // 4}x4fs"
    return f"IVF{min(4096, max(64, n // 250))}_HNSW32,SQ8"


def campaign_yaml(path: Path, items: str, store: str, index: str, seeds: Path, mode: str) -> Path:
    path.write_text(
        f"concept: rare\ndata: {items}\nseed_labels: {seeds}\nembeddings: {store}\nindex: {index}\n"
        "truth_column: label\nsplit_column: split\neval_split: test\nstrategy: maxent\n"
        f"mode: {mode}\nk: 100\nbatch_size: 100\nbudget: 100000\n"
    )
    return path


def publish_data(n: int, dim: int, work: Path, env: dict[str, str]) -> tuple[str, str, str, Path]:
    """The size's data on the bucket: items, a published store and a published index over U."""
    import round_cost

    from seals_al.dataset import index_over_u
    from seals_al.published import publish
    from seals_al.storage import open_storage
    from seals_al.store import FORMAT as STORE_FORMAT

    folder = work / "data" / f"n{n}-d{dim}"
    items, store = round_cost.make_data(n, dim, 0, folder / "data")
    seeds = round_cost.seed_file(items, n, 0, folder)
    gs = f"gs://{BUCKET}/n{n}-d{dim}"
    print(f"{n:,} x {dim}: publishing the items and the store", flush=True)
    open_storage(gs).upload(items, "items.csv")
    items_uri, store_uri, index_uri = f"{gs}/items.csv", f"{gs}/store", f"{gs}/index"
    publish(store, store_uri, STORE_FORMAT)
    print(f"{n:,} x {dim}: the index over U ({factory(n, dim)})", flush=True)
    os.environ["SEALS_CACHE_DIR"] = str(work / "builder-cache")
    index_over_u(
        items_uri,
        store_uri,
        index_uri,
        factory(n, dim),
        split_column="split",
        recall_queries=0,
        search_params={"nprobe": 16},
    )
    shutil.rmtree(work / "builder-cache")
    return items_uri, store_uri, index_uri, seeds


def clear_bucket(uri: str) -> None:
    from seals_al.storage import open_storage

    storage = open_storage(uri)
    for key in storage.list():
        storage.delete(key)


def oracle(uri: str, env: dict[str, str], work: Path) -> None:
    seals(["oracle", uri], {**env, "SEALS_CACHE_DIR": str(work / "oracle-cache")})


def copy_campaign(source: str, target: str) -> None:
    from seals_al.storage import open_storage

    src, dst = open_storage(source), open_storage(target)
    for key in src.list():
        dst.write_bytes(key, src.read_bytes(key))


def warm_cache(cache: Path, uris: list[str]) -> None:
    """A pod's disk that already holds these published folders (the store, the prepared data,
    the graph)."""
    from seals_al.published import materialize

    for uri in uris:
        materialize(uri, "a published folder", cache, progress=False)


def measure_size(n: int, dim: int, rounds: int, work: Path, env: dict[str, str], server, warm: bool) -> dict:
    from seals_al.storage import open_storage

    items, store, index, seeds = publish_data(n, dim, work, env)
    result: dict = {
        "rows": n,
        "dim": dim,
        "factory": factory(n, dim),
        "store_bytes": n * dim * 4,
        "modes": {},
    }
    for mode in ("seals", "global"):
        uri = f"gs://{BUCKET}/n{n}-d{dim}/campaign-{mode}"
        config = campaign_yaml(work / f"campaign-{mode}.yaml", items, store, index, seeds, mode)
        seals(["init", str(config), uri], {**env, "SEALS_CACHE_DIR": str(work / "init-cache")})
        shutil.rmtree(work / "init-cache", ignore_errors=True)
        print(
            f"{n:,} x {dim} {mode}: round 0 (prepares the data; SEALS builds the neighbour graph)", flush=True
        )
        builder = Path(tempfile.mkdtemp(dir=work))
        first = task(["round", uri], env, builder, server, work)
        shutil.rmtree(builder)
        oracle(uri, env, work)
        warm_uri = f"{uri}-warm"
        ways = {"cold": uri}
        if warm and mode == "seals":
            copy_campaign(uri, warm_uri)
            ways["warm"] = warm_uri
            shared = Path(tempfile.mkdtemp(dir=work, prefix="warm-"))
            prepared = [k for k in open_storage(store).list("prepared") if k.endswith("published.json")]
            graphs = [k for k in open_storage(index).list("graphs") if k.endswith("published.json")]
            warm_cache(
                shared,
                [store, *(f"{store}/{k.rsplit('/', 1)[0]}" for k in prepared)]
                + [f"{index}/{k.rsplit('/', 1)[0]}" for k in graphs],
            )
        per_way: dict[str, list[dict]] = {way: [] for way in ways}
        same = []
        for r in range(1, rounds + 1):
            for way, campaign in ways.items():
                tasks = {}
                for stage in STAGES:
                    cache = shared if way == "warm" else Path(tempfile.mkdtemp(dir=work))
                    args = [stage, campaign] + (
                        ["--out", str(work / f"report-{mode}-{way}")] if stage == "report" else []
                    )
                    tasks[stage] = task(args, env, cache, server, work)
                    if way == "cold":
                        shutil.rmtree(cache)
                per_way[way].append(tasks)
                oracle(campaign, env, work)
            if "warm" in ways:
                same.append(not differences(campaign_files(ways["cold"]), campaign_files(ways["warm"])))
            print(f"{n:,} x {dim} {mode}: round {r} {_line(per_way['cold'][-1])}", flush=True)
        if "warm" in ways:
            shutil.rmtree(shared)
        shutil.rmtree(work / "oracle-cache", ignore_errors=True)
        result["modes"][mode] = {
            "first_round": first,
            "rounds": per_way,
            "cold_equals_warm": same or None,
            "labeled_after": open_storage(uri).read_json(f"rounds/{rounds:03d}/metrics.json")["labeled"],
            "pool_size": open_storage(uri).read_json(f"rounds/{rounds:03d}/metrics.json").get("pool_size"),
        }
    return result


def _line(tasks: dict) -> str:
    total = _total(tasks)
    return f"{total['bytes'] / 1e6:,.1f} MB, {total['requests']:,} GETs, {total['seconds']:.1f} s"


def _total(tasks: dict) -> dict:
    keys = ("seconds", "requests", "server_gets", "bytes", "batches", "modelled_seconds")
    return {key: sum(t[key] for t in tasks.values()) for key in keys}


def _median_round(rounds: list[dict]) -> dict:
    """Per task and for the whole round, the median over rounds of each figure."""
    out = {
        stage: {k: statistics.median(r[stage][k] for r in rounds) for k in rounds[0][stage]}
        for stage in STAGES
    }
    totals = [_total(r) for r in rounds]
    out["round"] = {k: statistics.median(t[k] for t in totals) for k in totals[0]}
    out["round_max"] = {k: max(t[k] for t in totals) for k in totals[0]}
    return out


def round_three_ways(work: Path, env: dict[str, str], repeats: int) -> dict:
    """The one-round pipeline on CLINC150 in containers and in subprocesses, and `seals-al round`."""
    from kfp import local

    from e2e.run import docker_runner
    from e2e.run import run as run_pipeline
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
    base = f"gs://{BUCKET}/clinc/base"
    config = work / "clinc.yaml"
    config.write_text(
        f"concept: report_fraud\ndata: {items}\nseed_labels: {seeds}\nembeddings: {store}\nindex: {index}\n"
        "truth_column: label\nsplit_column: split\neval_split: test\nstrategy: maxent\nk: 100\n"
        "batch_size: 100\nbudget: 100000\n"
    )
    cache = {**env, "SEALS_CACHE_DIR": str(work / "clinc-cache")}
    seals(["init", str(config), base], cache)
    seals(["round", base], cache)
    oracle(base, env, work)
    times: dict[str, list[float]] = {"containers": [], "subprocesses": [], "seals-al round": []}
    pod_env = {"STORAGE_EMULATOR_HOST": env["STORAGE_EMULATOR_HOST"]}
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
    image = subprocess.run(
        ["docker", "image", "inspect", IMAGE, "--format", "{{.Size}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "ways": {way: {"median_s": statistics.median(t), "runs_s": t} for way, t in times.items()},
        "image_bytes": int(image.stdout.strip()),
    }


def plot(sizes: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    labels = [f"{s['rows'] / 1e6:g}M x {s['dim']}" for s in sizes]
    x = range(len(sizes))
    for mode, colour in (("seals", "tab:blue"), ("global", "tab:orange")):
        rounds = [_median_round(s["modes"][mode]["rounds"]["cold"])["round"] for s in sizes]
        axes[0].plot(x, [r["bytes"] / 1e6 for r in rounds], "o-", color=colour, label=mode)
        axes[1].plot(x, [r["requests"] for r in rounds], "o-", color=colour, label=mode)
        axes[2].plot(x, [r["modelled_seconds"] for r in rounds], "o-", color=colour, label=mode)
    titles = ("MB downloaded per round", "GET requests per round", "modelled seconds of reads per round")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_yscale("log")
        ax.set_xticks(list(x), labels)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].axhline(64, color="grey", linestyle=":", label="goal")
    axes[1].axhline(2000, color="grey", linestyle=":")
    axes[2].axhline(5, color="grey", linestyle=":")
    fig.suptitle("A round on a cluster, every task a new pod (empty cache): what it reads from the bucket")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def commit() -> str:
    """The checkout's commit, marked when it has changes (what measured a size)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def markdown(result: dict, command: str) -> str:
    sizes = result["sizes"]
    lines = [
        "## The cluster path: what a round reads from object storage",
        "",
        f"`{command}`: fake-gcs-server on 127.0.0.1 holds everything shared, as in `make e2e`. Every "
        "task is a fresh process with a new, empty cache (a new pod); bytes and GET requests are the "
        "process's own count (`$SEALS_IO_STATS_DIR`), and the server's log counted the same GETs "
        "(column *server*). Data: benchmarks/round_cost.py's synthetic clustered unit vectors (rare "
        "concept 0.5%, a fixed 10,000-row evaluation split), an items CSV and a published store, an "
        "IVF index over U; maxent, batch 100, k 100. Round 0 prepared the data and built the graph, "
        "each published once; the figures are rounds 1 on (median over rounds, the largest in "
        f"brackets). *Modelled*: each batch of n GETs costs ceil(n / {CONCURRENCY}) round trips of "
        f"{LATENCY * 1000:.0f} ms and bytes come at {BANDWIDTH / 1e6:.0f} MB/s (what real object "
        "storage would take for the reads alone); *measured*: the wall time of the four processes "
        "against the emulator here (2 cores), imports included.",
        "",
        "| rows x dim | mode | ingest | train | select | report | whole round: MB | GETs (server) "
        "| modelled s | measured s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for mode in ("seals", "global"):
            med = _median_round(size["modes"][mode]["rounds"]["cold"])
            cells = [f"{med[s]['bytes'] / 1e6:,.2f} MB, {med[s]['requests']:,.0f} GETs" for s in STAGES]
            whole, most = med["round"], med["round_max"]
            lines.append(
                f"| {size['rows']:,} x {size['dim']} | {mode} | {' | '.join(cells)} | "
                f"**{whole['bytes'] / 1e6:,.1f}** ({most['bytes'] / 1e6:,.1f}) | "
                f"**{whole['requests']:,.0f}** ({most['requests']:,.0f}); {whole['server_gets']:,.0f} | "
                f"{whole['modelled_seconds']:.2f} ({most['modelled_seconds']:.2f}) | {whole['seconds']:.1f} |"
            )
    measured_at = ", ".join(f"{s['rows']:,} x {s['dim']}: {s.get('commit', 'unrecorded')}" for s in sizes)
    lines += ["", f"Measured at commit: {measured_at}.", "", *goals(result)]
    lines += ["", "![cluster path](benchmarks/cluster_path.png)"]
    return "\n".join(lines) + "\n"


def goals(result: dict) -> list[str]:
    sizes = {(s["rows"], s["dim"]): s for s in result["sizes"]}
    lines = ["Against the goals (SEALS, every task a new pod):", ""]

    def seals_round(key: tuple[int, int], way: str = "cold") -> dict | None:
        size = sizes.get(key)
        return None if size is None else _median_round(size["modes"]["seals"]["rounds"][way])["round"]

    one = seals_round((1_000_000, 384))
    if one is not None:
        lines.append(
            f"- 1M x 384, whole round: {one['bytes'] / 1e6:,.1f} MB downloaded (goal: at most 64 MB), "
            f"{one['requests']:,.0f} GET requests (goal: at most 2,000)."
        )
    small, large = seals_round((1_000_000, 128)), seals_round((10_000_000, 128))
    if small is not None and large is not None:
        lines.append(
            f"- 1M -> 10M rows (128-d): bytes x{large['bytes'] / small['bytes']:.2f}, requests "
            f"x{large['requests'] / small['requests']:.2f} (goal: at most 1.3x)."
        )
        lines.append(
            f"- Modelled time of a round's reads at 10M: {large['modelled_seconds']:.2f} s (goal: under 5 s)."
        )
    warm = seals_round((1_000_000, 384), "warm")
    if one is not None and warm is not None:
        same = sizes[(1_000_000, 384)]["modes"]["seals"]["cold_equals_warm"] or []
        verdict = "identical" if same and all(same) else "NOT identical"
        lines.append(
            f"- 1M x 384, a round with empty caches against the emulator: {one['seconds']:.1f} s; "
            f"with a warm cache: {warm['seconds']:.1f} s: {one['seconds'] / warm['seconds']:.2f}x "
            f"(goal: within 2x); the committed round files of the two copies are {verdict} (timing "
            f"fields aside; {len(same)} rounds)."
        )
    return lines


def containers_markdown(found: dict, command: str) -> str:
    ways = found["ways"]
    fastest = ways["seals-al round"]["median_s"]
    return (
        "\n".join(
            [
                "## The cluster path: a round in containers, and the image",
                "",
                f"`{command}` (after `make image`): fake-gcs-server on 127.0.0.1 holds everything "
                "shared, as in `make e2e`. 2 cores; medians of interleaved runs, each from an empty cache.",
                "",
                "**One round on CLINC150** (ingest, train, select, report), three ways:",
                "",
                "| way | seconds | vs `seals-al round` |",
                "|---|---|---|",
                *(f"| {w} | {v['median_s']:.1f} | {v['median_s'] / fastest:.1f}x |" for w, v in ways.items()),
                "",
                f"**Image** `{IMAGE}`: {found['image_bytes'] / 1e9:.2f} GB (CPU torch, Beam, faiss, kfp, "
                "the two models).",
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="*", default=["1000000:384", "1000000:128", "10000000:128"], help="rows:dimension"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way in the containers section")
    parser.add_argument("--skip-containers", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/seals-cluster-path"))
    args = parser.parse_args(argv)
    from tests.gcs_server import running

    os.umask(0)  # folders kfp.local makes here are written by the containers' uid 10001 too
    kept = args.work / "data"  # the generated data is kept between runs
    if args.work.exists():
        for child in args.work.iterdir():
            if child != kept:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    args.work.mkdir(parents=True, exist_ok=True)
    # One section, or one size, may be measured again alone: the others' figures are kept, each
    # with the commit that measured it.
    result: dict = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result = {key: result[key] for key in ("sizes", "containers") if key in result}
    with running(BUCKET, on_disk=True) as server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "STORAGE_EMULATOR_HOST": server.url}
        for text in args.sizes:
            n, dim = (int(v) for v in text.split(":"))
            size = measure_size(
                n, dim, args.rounds, args.work, env, server, warm=(n, dim) == (1_000_000, 384)
            )
            size["commit"] = commit()
            kept_sizes = [s for s in result.get("sizes", []) if (s["rows"], s["dim"]) != (n, dim)]
            result["sizes"] = sorted([*kept_sizes, size], key=lambda s: (s["rows"], -s["dim"]))
            write_json(RESULTS, result)
            clear_bucket(f"gs://{BUCKET}/n{n}-d{dim}")  # the next size needs the disk
        if args.sizes:
            args.sizes = [f"{s['rows']}:{s['dim']}" for s in result["sizes"]]  # every size shown
            command = reproducing_command("cluster_path.py", parser, args, "sizes", "rounds")
            plot(result["sizes"])
            update_section("cluster_path", markdown(result, command))
            print(markdown(result, command))
        if not args.skip_containers:
            found = round_three_ways(args.work, env, args.repeats)
            result["containers"] = found
            write_json(RESULTS, result)
            command = (
                reproducing_command("cluster_path.py", parser, args, "repeats") + " (containers section)"
            )
            update_section("cluster_containers", containers_markdown(found, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
