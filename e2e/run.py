"""`make e2e`: the pipelines as a cluster runs them. Every task in its own container from the
project's image (kfp.local.DockerRunner, uid 10001, host networking), sharing nothing but object
storage (a GCS emulator on 127.0.0.1), KFP's pipeline root and the run's workspace.

1. The simulation pipeline on CLINC150: items, embeddings, index and campaign all on gs://.
2. The same pipeline with kfp.local's SubprocessRunner: the campaign must be the same, byte for
   byte (timing fields aside).
3. The looped pipeline: a thread drops label files into the gs:// inbox as a person would, and the
   run goes on past its wait.
4. A round whose select container is killed mid-publish (exit 137, its lease left behind); a new
   run takes the expired lease over and commits a round identical to a never-killed run's. The
   never-killed run's round tasks each read far less than the store from the bucket (counted by
   each process, $SEALS_IO_STATS_DIR): a task that downloaded a whole store or graph would fail.
5. Items that arrive: a campaign over a gs:// folder of item files, its store and index published;
   a second file arrives and the one-round pipeline with ``refresh_data=true`` embeds only that
   file's items (in a container) into the published store and adds them to the published index;
   the round grows the published neighbour graph and reaches a new item next to a labeled one.
6. Label Studio (a real server on 127.0.0.1, tests/labelstudio_server.py): the one-round pipeline
   in containers, with its URL and token in their environment as the Secret gives them on a
   cluster, pushes the open batch, a person annotates it through the REST API, and the next run
   pulls, commits the round and pushes the next batch; the token is in no file it left.
7. Beam workers in a container: Beam's worker pool (apache_beam.runners.worker.worker_pool_main)
   runs in a container of the project's image with no volume; the simulation pipeline compiled
   with Beam options that send its Beam work there (PortableRunner, EXTERNAL environment) embeds,
   trains and fills the index and builds the neighbour graph on it, and the score component
   scores the corpus on it. The index, the graph and the scores equal one process's.

Prints one summary line; exits non-zero on the first thing that does not hold.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.labelstudio_server: the same Label Studio the tests start
BUCKET = "seals-e2e"
LEASE_SECONDS = 8  # short, so the killed round's lease expires within the test
TIMING_KEYS = ("_seconds", "committed_at")


class Failed(Exception):
    """Something the end-to-end run checks did not hold."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def start_emulator() -> tuple[object, str]:
    """fake-gcs-server on a free loopback port (tests/gcs_server.py), with the bucket."""
    from tests.gcs_server import Server

    server = Server((BUCKET,))
    return server, server.url


def docker_runner(env: dict[str, str]):
    from kfp import local

    _read_real_exit_codes()
    return local.DockerRunner(network_mode="host", user="10001", environment=env)


def _read_real_exit_codes() -> None:
    """kfp.local 2.17.3's DockerRunner starts containers with ``auto_remove=True`` and reports one
    that Docker removed before its exit code was read as a success (kubeflow/pipelines#13332;
    the fix, #13907, is not released): a task that failed fast passed here once. Until it is, its
    containers run without auto-removal, and each is removed after its real exit code is read."""
    from kfp.local import docker_task_handler as handler

    def run_docker_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
        image = handler.add_latest_tag_if_not_present(image=image)
        if not any(image in (i.tags + i.attrs["RepoDigests"]) for i in client.images.list()):
            client.images.pull(image)
        container = client.containers.run(
            image=image, command=command, detach=True, stdout=True, stderr=True, volumes=volumes, **run_args
        )
        try:
            for line in container.logs(stream=True):
                print(line.decode(), end="")
            return container.wait()["StatusCode"]
        finally:
            container.remove(force=True)

    handler.run_docker_container = run_docker_container


def run(runner, work: Path, pipeline, **arguments) -> bool:
    """One pipeline run through kfp.local; True when every task succeeded."""
    from kfp import local

    for name in ("pipeline-root", "workspace"):
        (work / name).mkdir(parents=True, exist_ok=True)
    local.init(
        runner=runner,
        pipeline_root=str(work / "pipeline-root"),
        workspace_root=str(work / "workspace"),
        raise_on_error=True,
    )
    try:
        pipeline(**arguments)
    except RuntimeError as e:  # kfp.local: a task failed
        print(f"e2e: {work.name}: {e}", file=sys.stderr)
        return False
    return True


ROUND_TASKS = ("label_ingest", "train", "select_round", "report")
READ_BOUND = 0.5  # of the store's bytes: what one round task may read from the bucket, at most


def reads_per_task(folder: Path) -> dict[str, int]:
    """Bytes each component read from object storage, by its function's name (the counts every
    process of a task wrote to ``folder``)."""
    reads: dict[str, int] = {}
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text())
        argv = record["argv"]
        if "--function_to_execute" in argv:
            task = argv[argv.index("--function_to_execute") + 1]
            reads[task] = reads.get(task, 0) + int(record["bytes"])
    return reads


def metrics_artifacts(work: Path) -> list[dict]:
    """What the UI shows for each round: the report tasks' Metrics artifacts."""
    found = []
    for path in sorted((work / "pipeline-root").glob("*/report*/executor_output.json")):
        artifacts = json.loads(path.read_text())["artifacts"]
        found.append(artifacts["metrics"]["artifacts"][0]["metadata"])
    return found


def campaign_files(uri: str) -> dict[str, object]:
    """Every object of a campaign but its lease, JSON with timing fields dropped."""
    from seals_al.storage import open_storage

    storage = open_storage(uri)
    out: dict[str, object] = {}
    for key in storage.list():
        if key == "LOCK":
            continue
        data = storage.read_bytes(key)
        if key.endswith(".json") or key.endswith("COMMITTED"):
            out[key] = _without_timing(json.loads(data))
        elif key.endswith(".jsonl"):
            out[key] = [_without_timing(json.loads(line)) for line in data.decode().splitlines() if line]
        else:
            out[key] = data
        if key.endswith(".npz"):  # each array too, so a difference names the array
            import io

            import numpy as np

            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                for name in arrays.files:
                    a = arrays[name]
                    out[f"{key}[{name}]"] = (str(a.dtype), a.shape, a.tobytes())
    return out


def _without_timing(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not k.endswith(TIMING_KEYS)}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def drop_labels(uri: str, r: int, truth: dict[str, int]) -> str:
    """Label round r's batch from the truth column into its inbox on gs://, as a person would;
    returns the label file's key."""
    from seals_al.storage import open_storage

    storage = open_storage(uri)
    batch = storage.read_text(f"rounds/{r:03d}/to_label.jsonl").splitlines()
    ids = [json.loads(line)["id"] for line in batch if line]
    rows = "".join(f"{i},{truth[i]}\n" for i in ids)
    key = f"inbox/{r:03d}/labels.csv"
    storage.write_text(key, "id,label\n" + rows)
    return key


class Labeler(threading.Thread):
    """A person labeling: whenever a round of the campaign is committed, label its batch."""

    def __init__(self, campaign_uri: str, truth: dict[str, int]):
        super().__init__(daemon=True)
        self.campaign_uri, self.truth = campaign_uri, truth
        self.dropped: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from seals_al.storage import open_storage

        storage = open_storage(self.campaign_uri)  # the campaign may not exist yet
        labeled: set[int] = set()
        while not self.stop.wait(1.0):
            keys = storage.list("rounds")
            committed = {int(k.split("/")[1]) for k in keys if k.endswith("/COMMITTED")}
            for r in committed - labeled:
                self.dropped.append(drop_labels(self.campaign_uri, r, self.truth))
                labeled.add(r)


SLICE = ("report_fraud", "transfer", "timer", "pay_bill", "translate")  # as the tests' slice


def grow_campaign(gs: str, items: Path, concept: str) -> str:
    """A campaign over gs://.../growing/items/ (one file: a few intents of the items), its store
    and index published there in this process (Beam and faiss, as the pipeline's first steps
    would); returns its URI."""
    from seals_al.campaign import CampaignConfig, ensure_campaign
    from seals_al.dataset import index_over_u
    from seals_al.embed.pipeline import ensure_embeddings
    from seals_al.labeltools.oracle import seed_file_from_truth
    from seals_al.settings import DataConfig
    from seals_al.storage import open_storage

    with items.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if row["label"] in SLICE]
        fields = reader.fieldnames
    open_storage(f"{gs}/growing/items").write_text("0.csv", _csv(fields, rows))
    folder, store, index = (f"{gs}/growing/{name}" for name in ("items", "embeddings", "index"))
    ensure_embeddings(folder, store)
    index_over_u(folder, store, index, split_column="split")
    data = DataConfig(folder, embeddings=store, index=index, truth_column="label", split_column="split")
    config = CampaignConfig(concept, "", data)
    uri = f"{gs}/campaigns/growing"
    ensure_campaign(config, uri, lambda: seed_file_from_truth(config))
    return uri


def add_items(gs: str, uri: str, items: Path, concept: str) -> list[str]:
    """A second file in the folder: a near copy of three labeled positives and 12 other items;
    returns the near copies' ids."""
    from seals_al.campaign import Campaign
    from seals_al.storage import open_storage

    campaign = Campaign(uri, progress=False)
    labeled = sorted(i for i, row in campaign.state().labeled.items() if row["label"] == 1)[:3]
    dataset = campaign.dataset()
    texts = dataset.texts_of(dataset.row_ids_of(labeled))
    with items.open(newline="") as f:
        reader = csv.DictReader(f)
        others = [row for row in reader if row["label"] not in SLICE and row["split"] != "test"][:12]
        fields = reader.fieldnames
    near = [
        {**others[0], "id": f"near-{i}", "text": f"{t} right now", "label": concept}
        for i, t in zip(labeled, texts, strict=True)
    ]
    open_storage(f"{gs}/growing/items").write_text("1.csv", _csv(fields, near + others))
    return [row["id"] for row in near]


def _csv(fields, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def truth_of(items: Path, concept: str) -> dict[str, int]:
    with items.open(newline="") as f:
        return {row["id"]: int(row["label"] == concept) for row in csv.DictReader(f)}


def copy_campaign(source: str, target: str, skip: str | None = None) -> None:
    """Copy every object of a campaign (but those under ``skip``)."""
    from seals_al.storage import open_storage

    src, dst = open_storage(source), open_storage(target)
    for key in src.list():
        if skip is None or not key.startswith(skip):
            dst.write_bytes(key, src.read_bytes(key))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--items", default=str(ROOT / "data" / "clinc150" / "clinc150.csv"))
    parser.add_argument("--concept", default="report_fraud")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default="/tmp/seals-e2e")
    args = parser.parse_args(argv)

    os.umask(0)  # folders kfp.local makes here are written by the containers' uid 10001 too
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    server, emulator = start_emulator()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator
    os.environ["SEALS_LEASE_SECONDS"] = str(LEASE_SECONDS)
    os.environ["SEALS_CACHE_DIR"] = str(work / "subprocess-cache")
    env = {"STORAGE_EMULATOR_HOST": emulator, "SEALS_LEASE_SECONDS": str(LEASE_SECONDS)}
    try:
        summary = scenarios(args, work, env)
    except Failed as e:
        print(f"e2e: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    print(f"e2e: passed in {time.perf_counter() - started:.0f} s: {summary}")
    return 0


def scenarios(args, work: Path, env: dict[str, str]) -> str:
    from kfp import local

    from pipelines._cluster import Cluster
    from pipelines.looped import make_looped
    from pipelines.one_round import make_one_round, seals_one_round
    from pipelines.simulation import make_simulation
    from seals_al.campaign import Campaign
    from seals_al.storage import open_storage

    gs = f"gs://{BUCKET}"
    open_storage(f"{gs}/items").write_bytes("clinc150.csv", Path(args.items).read_bytes())
    data = {
        "items_uri": f"{gs}/items/clinc150.csv",
        "embeddings_uri": f"{gs}/embeddings",
        "index_uri": f"{gs}/index",
        "concept": args.concept,
    }
    timings: dict[str, float] = {}

    def timed(name: str, runner, pipeline, **arguments) -> bool:
        begun = time.perf_counter()
        ok = run(runner, work / name, pipeline, **arguments)
        timings[name] = time.perf_counter() - begun
        return ok

    # 1. The simulation pipeline, every task in its own container, everything on gs://.
    simulation = make_simulation(args.rounds)
    docker_uri = f"{gs}/campaigns/simulation-docker"
    check(
        timed("simulation-docker", docker_runner(env), simulation, campaign_uri=docker_uri, **data),
        "the simulation pipeline failed in containers",
    )
    rounds = Campaign(docker_uri, progress=False).committed_rounds()
    check(rounds == list(range(args.rounds)), f"{docker_uri}: committed rounds {rounds}")
    shown = metrics_artifacts(work / "simulation-docker")
    committed = [open_storage(docker_uri).read_json(f"rounds/{r:03d}/metrics.json") for r in rounds]
    check(
        sorted(m["labeled"] for m in shown) == sorted(m["labeled"] for m in committed),
        f"the Metrics artifacts ({len(shown)}) do not match the {len(committed)} committed rounds",
    )

    # 2. The same with kfp.local's subprocess runner: the same campaign, byte for byte.
    subprocess_uri = f"{gs}/campaigns/simulation-subprocess"
    check(
        timed(
            "simulation-subprocess",
            local.SubprocessRunner(use_venv=False),
            simulation,
            campaign_uri=subprocess_uri,
            **data,
        ),
        "the simulation pipeline failed in subprocesses",
    )
    diff = differences(campaign_files(docker_uri), campaign_files(subprocess_uri))
    check(not diff, f"containers and subprocesses wrote different campaigns: {diff[:5]}")

    # 3. The looped pipeline: a person's labels arrive in the gs:// inbox while the run waits.
    truth = truth_of(Path(args.items), args.concept)
    looped_uri = f"{gs}/campaigns/looped"
    seeds = f"{gs}/seeds/seeds.csv"
    seed_file = open_storage(docker_uri).read_bytes(_seed_key(docker_uri))
    open_storage(f"{gs}/seeds").write_bytes("seeds.csv", seed_file)
    person = Labeler(looped_uri, truth)
    person.start()
    looped = make_looped(2)
    ok = timed(
        "looped-docker",
        docker_runner(env),
        looped,
        campaign_uri=looped_uri,
        seed_labels_uri=seeds,
        truth_column="label",
        split_column="split",
        poll_seconds=1.0,
        timeout_seconds=600.0,
        **data,
    )
    check(ok, "the looped pipeline failed in containers")
    person.stop.set()
    rounds = Campaign(looped_uri, progress=False).committed_rounds()
    check(rounds == [0, 1], f"{looped_uri}: committed rounds {rounds} (labels dropped: {person.dropped})")

    # 4. A select container killed mid-publish; a new run takes over its lease.
    killed, clean = f"{gs}/campaigns/killed", f"{gs}/campaigns/never-killed"
    for uri in (killed, clean):
        copy_campaign(looped_uri, uri)
        drop_labels(uri, max(Campaign(uri, progress=False).committed_rounds()), truth)
    dies = docker_runner({**env, "SEALS_FAILPOINT": "during_publish"})
    # Without retries: KFP's retry would be killed at the same failpoint again (60 s + 120 s).
    once = make_one_round(Cluster(retries=0))
    check(not timed("one-round-killed", dies, once, campaign_uri=killed), "the killed run passed")
    check(not _committed(killed, 2), f"{killed}: the killed select committed its round")
    lock = open_storage(killed).read_json("LOCK") if open_storage(killed).exists("LOCK") else None
    check(lock is not None, f"{killed}: the killed select left no lease behind")
    time.sleep(max(0.0, lock["expires"] - time.time()) + 1)
    check(
        timed("one-round-resumed", docker_runner(env), seals_one_round, campaign_uri=killed),
        "the run after the killed one failed",
    )
    counted = work / "one-round-clean" / "pipeline-root" / "io"  # kfp.local mounts the root
    check(
        timed(
            "one-round-clean",
            docker_runner({**env, "SEALS_IO_STATS_DIR": str(counted)}),
            seals_one_round,
            campaign_uri=clean,
        ),
        "the never-killed run failed",
    )
    store = open_storage(data["embeddings_uri"]).read_json("manifest.json")
    reads = reads_per_task(counted)
    check(set(ROUND_TASKS) <= set(reads), f"no read counts for {sorted(set(ROUND_TASKS) - set(reads))}")
    bound = store["count"] * store["dim"] * 4 * READ_BOUND
    heavy = {task: size for task, size in reads.items() if task in ROUND_TASKS and size > bound}
    check(
        not heavy, f"round tasks read more than {READ_BOUND:.0%} of the store ({bound:,.0f} bytes): {heavy}"
    )
    timings.update({f"{task} read MB": size / 1e6 for task, size in sorted(reads.items())})
    check(_committed(killed, 2), f"{killed}: round 2 was not committed after the takeover")
    diff = differences(
        {k: v for k, v in campaign_files(killed).items() if k.startswith("rounds/002/")},
        {k: v for k, v in campaign_files(clean).items() if k.startswith("rounds/002/")},
    )
    check(not diff, f"the resumed round differs from a never-killed one: {diff[:5]}")

    # 5. Items that arrive: a campaign over a gs:// folder of item files; a second file arrives and
    # the one-round pipeline's refresh_data step (a container) embeds only its items into the
    # published store and rebuilds the index, and the round reaches a new item next to a labeled one.
    growing = grow_campaign(gs, Path(args.items), args.concept)
    check(
        timed(
            "refresh-round-0", docker_runner(env), seals_one_round, campaign_uri=growing, refresh_data=True
        ),
        "the one-round pipeline with refresh_data failed on data that did not change",
    )
    near = add_items(gs, growing, Path(args.items), args.concept)
    drop_labels(growing, 0, truth)
    check(
        timed(
            "refresh-round-1", docker_runner(env), seals_one_round, campaign_uri=growing, refresh_data=True
        ),
        "the one-round pipeline with refresh_data failed after items arrived",
    )
    import numpy as np

    store = open_storage(f"{gs}/growing/embeddings").read_json("manifest.json")
    check(
        (store["extra"].get("appended"), store["extra"].get("embedded")) == (len(near) + 12,) * 2,
        f"the refresh embedded {store['extra'].get('embedded')} items, not only the new file's",
    )
    record = open_storage(growing).read_json("rounds/001/metrics.json")
    check(record.get("items_added") == len(near) + 12, f"round 1 records {record.get('items_added')} added")
    state = Campaign(growing, progress=False)
    dataset = state.dataset()
    pool = open_storage(growing).read_bytes("rounds/001/pool/pool.npz")
    with np.load(io.BytesIO(pool)) as saved:
        reachable = set(dataset.external_ids(saved["ids"])) | {row["id"] for row in state.state().batch}
    check(
        set(near) <= reachable, f"new items next to labeled ones are not selectable: {set(near) - reachable}"
    )
    index = open_storage(f"{gs}/growing/index").read_json("manifest.json")
    check("grown_from" in index, "the published index was built again, not extended")
    graph = dataset.neighbours(state.config.learning.k).manifest
    check(
        graph.get("grown_rows") == len(near) + 12, "the published neighbour graph was built again, not grown"
    )

    # 6. Label Studio: the batch goes there and the annotations come back, every step in a container.
    from tests.labelstudio_server import Person, running

    begun = time.perf_counter()
    with running() as studio:
        timings["label-studio-start"] = time.perf_counter() - begun
        labeled_uri = f"{gs}/campaigns/label-studio"
        copy_campaign(looped_uri, labeled_uri, skip="inbox/001/")  # batch 1 unanswered: for Label Studio
        with_studio = docker_runner(
            {**env, "LABEL_STUDIO_URL": studio.url, "LABEL_STUDIO_API_KEY": studio.token}
        )
        check(
            timed("label-studio-push", with_studio, seals_one_round, campaign_uri=labeled_uri),
            "the one-round pipeline failed to push the open batch to Label Studio",
        )
        annotator = Person(studio)
        project = open_storage(labeled_uri).read_json("labelstudio.json")["project"]
        batch = annotator.tasks(project)
        pending = {row["id"] for row in Campaign(labeled_uri, progress=False).state().pending}
        check(set(batch) == pending, f"Label Studio project {project}: {len(batch)} tasks, not the batch's")
        for item, task in batch.items():
            annotator.annotate(task["id"], args.concept if truth[item] else f"not {args.concept}")
        check(
            timed("label-studio-round", with_studio, seals_one_round, campaign_uri=labeled_uri),
            "the one-round pipeline failed to pull the annotations and run the round",
        )
        check(_committed(labeled_uri, 2), f"{labeled_uri}: no round 2 after the annotations came back")
        sources = {row["source"] for row in Campaign(labeled_uri, progress=False).state().labeled.values()}
        check("inbox/001/label-studio.json" in sources, f"{labeled_uri}: labels came from {sorted(sources)}")
        batch_2 = {row["id"] for row in Campaign(labeled_uri, progress=False).state().batch}
        check(batch_2 <= set(annotator.tasks(project)), "round 2's batch was not pushed")
        leaked = [
            str(path)
            for path in (work / "label-studio-round").rglob("*")
            if path.is_file() and studio.token.encode() in path.read_bytes()
        ]
        leaked += [k for k, v in campaign_files(labeled_uri).items() if studio.token in repr(v)]
        check(not leaked, f"the Label Studio token was written to {leaked[:3]}")

    # 7. Beam workers in a container of the project's image (Beam's worker pool, sharing nothing
    # with the tasks but the bucket): embed, the index, its graph and the corpus scores run there.
    beam_workers(gs, Path(args.items), args.concept, env, timed, work)
    return ", ".join(f"{k} {v:.1f}" if k.endswith("MB") else f"{k} {v:.0f} s" for k, v in timings.items())


def beam_workers(gs: str, items: Path, concept: str, env: dict[str, str], timed, work: Path) -> None:
    """The simulation pipeline compiled with Beam options that send embed, build_index (index and
    neighbour graph) to a worker pool in its own container, then the score component with them:
    the index, the graph and the scores must equal what one process makes from the same store."""
    import numpy as np
    import pyarrow.parquet as pq

    from components.score.component import score
    from pipelines._cluster import Cluster
    from pipelines.simulation import make_simulation
    from seals_al.campaign import Campaign
    from seals_al.dataset import index_over_u
    from seals_al.index.directory import open_index_dir
    from seals_al.index.graph import build_neighbour_graph
    from seals_al.published import materialize
    from seals_al.score.corpus import score_campaign
    from seals_al.storage import open_storage
    from seals_al.store import EmbeddingStore

    with items.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if row["label"] in SLICE]
        fields = reader.fieldnames
    root = f"{gs}/beam"
    open_storage(f"{root}/items").write_text("items.csv", _csv(fields, rows))
    data = {
        "items_uri": f"{root}/items/items.csv",
        "embeddings_uri": f"{root}/embeddings",
        "index_uri": f"{root}/index",
        "concept": concept,
        "index_factory": BEAM_FACTORY,
    }
    uri = f"{root}/campaign"
    with worker_pool(env) as beam_args:
        simulation = make_simulation(1, Cluster(beam_args=tuple(beam_args), retries=0))
        check(
            timed("beam-workers", docker_runner(env), simulation, campaign_uri=uri, **data),
            "the simulation pipeline failed with its Beam work on the worker pool",
        )
        check(
            timed("beam-score", docker_runner(env), score, campaign_uri=uri, beam_args=beam_args),
            "the score component failed with its Beam work on the worker pool",
        )
    # What one process makes from the same store: the index, the graph of U, the scores.
    here = f"{root}/index-here"
    index_over_u(
        data["items_uri"],
        data["embeddings_uri"],
        here,
        BEAM_FACTORY,
        split_column="split",
        search_params={"nprobe": 16},  # as the build_index component asks
        recall_queries=200,
    )
    built = [materialize(i, "an index directory", progress=False) for i in (data["index_uri"], here)]
    same = (built[0] / "index.faiss").read_bytes() == (built[1] / "index.faiss").read_bytes()
    check(same, "the index the workers filled differs from the one-process index")
    graphs = open_storage(f"{data['index_uri']}/graphs").list()
    folders = sorted({key.split("/")[0] for key in graphs})
    check(
        len(folders) == 1, f"{data['index_uri']}/graphs: {folders}, not the one graph build_index publishes"
    )
    graph = materialize(f"{data['index_uri']}/graphs/{folders[0]}", "a neighbour graph", progress=False)
    store = EmbeddingStore.open(materialize(data["embeddings_uri"], "an embeddings store", progress=False))
    k = json.loads((graph / "manifest.json").read_text())["k"]
    one = build_neighbour_graph(
        open_index_dir(built[0]),
        store,
        np.load(graph / "row_ids.npy"),
        k,
        work / "graph-here",
        progress=False,
    )
    for name in ("row_ids.npy", "neighbours.npy", "similarities.npy"):
        check(
            np.array_equal(np.load(graph / name), np.load(one.path / name)),
            f"the workers' graph: {name} differs",
        )
    scored = sorted((work / "beam-score" / "pipeline-root").glob("*/score/scores"))
    check(len(scored) == 1, f"the score component wrote {len(scored)} score files")
    score_campaign(Campaign(uri, progress=False), str(work / "scores-here.parquet"))
    check(
        pq.read_table(scored[0]).equals(pq.read_table(work / "scores-here.parquet")),
        "the scores from the worker pool differ from one process's",
    )


BEAM_FACTORY = "IVF16,PQ16x4fs"  # IVF (what workers fill), fast-scan PQ (the twin conversion)


@contextmanager
def worker_pool(env: dict[str, str]) -> Iterator[list[str]]:
    """Beam's worker pool (apache_beam.runners.worker.worker_pool_main) in a container of the
    project's image, host networking, no volume: yields the Beam options that run a pipeline's
    work there (the task container is the driver, with Beam's embedded job service)."""
    import socket

    import docker

    from seals_al.version import IMAGE

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = docker.from_env()
    command = ["python", "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"]
    container = client.containers.run(
        IMAGE, command, detach=True, network_mode="host", user="10001", environment=env
    )
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.time() > deadline:
                raise Failed(
                    f"Beam's worker pool did not listen on port {port}: {container.logs()[-2000:]!r}"
                )
            time.sleep(0.5)
        yield [
            "--runner=PortableRunner",
            "--job_endpoint=embed",
            "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{port}",
        ]
    finally:
        logs = container.logs().decode(errors="replace")
        container.remove(force=True)
        if "Traceback" in logs:
            print(f"e2e: the worker pool's log:\n{logs[-4000:]}", file=sys.stderr)


def _seed_key(uri: str) -> str:
    from seals_al.storage import open_storage

    return next(k for k in open_storage(uri).list("seed"))


def _committed(uri: str, r: int) -> bool:
    from seals_al.campaign import Campaign

    return r in Campaign(uri, progress=False).committed_rounds()


if __name__ == "__main__":
    sys.exit(main())
