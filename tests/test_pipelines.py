"""The pipelines, run for real in kfp.local (SubprocessRunner, no mocked KFP): the simulation,
the looped pipeline with a person (a test thread) dropping labels while wait_for_labels polls,
its timeout, one round per run, and golden compiled YAML."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.compile import COMPILED, pipelines
from pipelines.looped import make_looped
from pipelines.many_concepts import make_many_concepts
from pipelines.one_round import seals_one_round
from pipelines.simulation import make_simulation
from seals_al.campaign import Campaign
from seals_al.labeltools.oracle import label_open_batch
from seals_al.version import IMAGE, __version__

from .conftest import campaign_over_built

CONCEPT = "report_fraud"


def reports(root: Path) -> dict[int, dict]:
    """Round -> the report task's executor output (what the KFP UI renders)."""
    found = {}
    for path in root.glob("*/report*/executor_output.json"):
        output = json.loads(path.read_text())
        summary = Path(output["artifacts"]["summary"]["artifacts"][0]["uri"]).read_text()
        r = int(re.search(r"round (\d+)", summary).group(1))
        found[r] = output
    return found


def test_simulation_pipeline_runs_three_rounds_with_artifacts(tmp_path, built, kfp_local):
    campaign_uri = str(tmp_path / "campaign")
    make_simulation(3)(**built, campaign_uri=campaign_uri, concept=CONCEPT, batch_size=20, budget=500)
    campaign = Campaign(campaign_uri, progress=False)
    assert campaign.committed_rounds() == [0, 1, 2]
    assert len(campaign.state().labeled) == 140
    found = reports(kfp_local)
    assert sorted(found) == [0, 1, 2]
    for r, output in found.items():
        metrics = campaign.storage.read_json(f"rounds/{r:03d}/metrics.json")
        logged = output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for key in ("labeled", "positives", "recall", "average_precision", "pool_size", "pool_fraction"):
            assert logged[key] == pytest.approx(metrics[key]), (r, key)
        assert logged["labeled"] == 100 + 20 * r
        curves = output["artifacts"]["curves"]["artifacts"][0]["metadata"]
        matrix = [row["row"] for row in curves["confusionMatrix"]["rows"]]
        assert sum(map(sum, matrix)) == 150, "the confusion matrix covers the 150 evaluation rows"
        assert curves["confidenceMetrics"], "an ROC curve"
        html = Path(output["artifacts"]["html_report"]["artifacts"][0]["uri"]).read_text()
        batch = campaign.storage.read_text(f"rounds/{r:03d}/to_label.jsonl").splitlines()
        assert "<svg " in html
        assert json.loads(batch[0])["id"] in html, "the report shows the batch"
        assert output["parameterValues"]["Output"] is True
    for task in ("embed", "build-index"):
        (output,) = kfp_local.glob(f"*/{task}/executor_output.json")
        assert json.loads(output.read_text())["parameterValues"]["skipped"] is True, f"{task} reused"
    # Every round's own artifacts: the batch as a Dataset, and the campaign files.
    batches = sorted(kfp_local.glob("*/select-round*/batch"))
    assert len(batches) == 3
    assert sorted(p.read_text() for p in batches) == sorted(
        campaign.storage.read_text(f"rounds/{r:03d}/to_label.jsonl") for r in range(3)
    )


def test_simulation_stops_when_the_budget_is_spent(tmp_path, built, kfp_local):
    campaign_uri = str(tmp_path / "campaign")
    make_simulation(4)(**built, campaign_uri=campaign_uri, concept=CONCEPT, batch_size=20, budget=120)
    campaign = Campaign(campaign_uri, progress=False)
    assert campaign.committed_rounds() == [0, 1], "round 1 spent the budget; dsl.If stopped there"
    assert campaign.next_step() == (False, "budget spent: 120 of 120 labeled")


def test_many_concepts_run_in_parallel_over_one_embed_and_one_index(tmp_path, built, kfp_local):
    concepts = ["report_fraud", "timer"]
    make_many_concepts(2, parallelism=2)(
        **built, campaign_root=str(tmp_path / "campaigns"), concepts=concepts, batch_size=20, budget=500
    )
    for concept in concepts:
        campaign = Campaign(str(tmp_path / "campaigns" / concept), progress=False)
        assert campaign.config.concept == concept
        assert (campaign.config.dataset.embeddings, campaign.config.dataset.index) == (
            built["embeddings_uri"],
            built["index_uri"],
        )
        assert campaign.committed_rounds() == [0, 1]
        metrics = campaign.storage.read_json("rounds/001/metrics.json")
        assert metrics["labeled"] == 120
        assert metrics["positives"] >= 5, "its own concept's positives, found from its own seeds"
    assert len(list(kfp_local.glob("*/embed"))) == 1, "one embed for all concepts"
    assert len(list(kfp_local.glob("*/build-index"))) == 1, "one index for all concepts"


def looped_args(built: dict, campaign_uri: str, poll: float, timeout: float) -> dict:
    """A person's campaign: seed labels from a file (5 positives, 95 negatives of the slice)."""
    seeds = Path(campaign_uri).parent / "seeds.csv"
    with open(built["items_uri"], newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["split"] != "test"]
    positives = [row["id"] for row in rows if row["label"] == CONCEPT][:5]
    negatives = [row["id"] for row in rows if row["label"] != CONCEPT][:95]
    seeds.write_text(
        "id,label\n" + "".join(f"{i},yes\n" for i in positives) + "".join(f"{i},no\n" for i in negatives)
    )
    return dict(
        **built,
        campaign_uri=campaign_uri,
        concept=CONCEPT,
        seed_labels_uri=str(seeds),
        truth_column="label",
        split_column="split",
        batch_size=20,
        budget=500,
        poll_seconds=float(poll),
        timeout_seconds=float(timeout),
    )


def test_looped_pipeline_continues_when_labels_are_dropped_while_it_waits(tmp_path, built, kfp_local):
    campaign_uri = str(tmp_path / "campaign")
    dropped: list[str] = []

    def person() -> None:
        """Waits for the first batch, lets the sensor poll a few times, then drops labels."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (Path(campaign_uri) / "rounds" / "000" / "COMMITTED").exists():
                time.sleep(3)  # wait_for_labels is polling meanwhile
                dropped.append(label_open_batch(Campaign(campaign_uri, progress=False)))
                return
            time.sleep(0.2)

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    make_looped(2)(**looped_args(built, campaign_uri, poll=0.5, timeout=120))
    thread.join(timeout=10)
    assert dropped == ["inbox/000/oracle.jsonl"]
    campaign = Campaign(campaign_uri, progress=False)
    assert campaign.committed_rounds() == [0, 1], "the run went on into round 1 after the labels came"
    assert len(campaign.state().labeled) == 120


def test_looped_pipeline_times_out_clearly_and_the_campaign_resumes(tmp_path, built, kfp_local, capfd):
    campaign_uri = str(tmp_path / "campaign")
    with pytest.raises(RuntimeError):
        make_looped(2)(**looped_args(built, campaign_uri, poll=0.5, timeout=2))
    out, err = capfd.readouterr()
    assert f"{campaign_uri}/inbox/000/: no new labels after 2 s; the campaign is unchanged at round 0" in (
        out + err
    )
    campaign = Campaign(campaign_uri, progress=False)
    assert campaign.committed_rounds() == [0]
    status = campaign.status()
    assert status["pending"] == 20
    assert status["lock"] is None
    assert status["interrupted_round"] is None
    # Resume later by submitting again, never by retrying the failed wait (docs/CLUSTER.md).
    # Either the one-round pipeline picks the campaign up once labels arrived...
    label_open_batch(campaign)
    seals_one_round(campaign_uri=campaign_uri)
    assert Campaign(campaign_uri, progress=False).committed_rounds() == [0, 1]
    # ... or the looped pipeline, submitted again with the same campaign: embed, index and init
    # are reused, its first ingest takes in the labels, and it waits again after that round.
    label_open_batch(Campaign(campaign_uri, progress=False))
    with pytest.raises(RuntimeError):
        make_looped(2)(**looped_args(built, campaign_uri, poll=0.5, timeout=2))
    assert Campaign(campaign_uri, progress=False).committed_rounds() == [0, 1, 2]


def test_one_round_per_run_advances_one_round_per_labels_and_is_idempotent(tmp_path, built, kfp_local):
    campaign_uri = str(tmp_path / "campaign")
    campaign = campaign_over_built(built, campaign_uri)

    def snapshot() -> dict[str, bytes]:
        return {k: campaign.storage.read_bytes(k) for k in campaign.storage.list("")}

    seals_one_round(campaign_uri=campaign_uri)  # round 0 from the seeds
    assert campaign.committed_rounds() == [0]
    before = snapshot()
    seals_one_round(campaign_uri=campaign_uri)  # no new labels
    assert snapshot() == before, "a run with no new labels changes nothing"
    label_open_batch(campaign)
    seals_one_round(campaign_uri=campaign_uri)
    assert campaign.committed_rounds() == [0, 1]
    assert len(campaign.state().labeled) == 120
    label_open_batch(campaign)
    seals_one_round(campaign_uri=campaign_uri)
    assert campaign.committed_rounds() == [0, 1, 2], "exactly one round per run with labels"


def test_one_round_with_refresh_data_embeds_only_the_new_items_and_they_are_selectable(
    tmp_path, clinc_slice, kfp_local
):
    """A recurring run over a folder of items that grows: the refresh step appends only the new
    file's items to the published store and rebuilds the index, and the round then reaches a new
    item next to a labeled one."""
    from seals_al.campaign import CampaignConfig, ensure_campaign
    from seals_al.dataset import index_over_u
    from seals_al.embed.pipeline import ensure_embeddings
    from seals_al.labeltools.oracle import seed_file_from_truth
    from seals_al.settings import DataConfig, RoundConfig
    from seals_al.store import EmbeddingStore

    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "0.csv").write_bytes(clinc_slice.read_bytes())
    store, index = str(tmp_path / "store"), str(tmp_path / "index")
    ensure_embeddings(str(folder), store)
    index_over_u(str(folder), store, index, split_column="split")
    data = DataConfig(str(folder), embeddings=store, index=index, truth_column="label", split_column="split")
    config = CampaignConfig(CONCEPT, "", data, RoundConfig(batch_size=20))
    campaign_uri = str(tmp_path / "campaign")
    ensure_campaign(config, campaign_uri, lambda: seed_file_from_truth(config))
    seals_one_round(campaign_uri=campaign_uri, refresh_data=True)  # up to date: round 0
    campaign = Campaign(campaign_uri, progress=False)
    labeled = sorted(i for i, row in campaign.state().labeled.items() if row["label"] == 1)[:3]
    dataset = campaign.dataset()
    texts = dict(zip(labeled, dataset.texts_of(dataset.row_ids_of(labeled)), strict=True))
    with (folder / "1.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label", "split"])
        writer.writerows([f"near-{i}", f"{texts[i]} right now", CONCEPT, "train"] for i in labeled)
    label_open_batch(campaign)
    seals_one_round(campaign_uri=campaign_uri, refresh_data=True)
    campaign = Campaign(campaign_uri, progress=False)
    assert campaign.committed_rounds() == [0, 1]
    grown = EmbeddingStore.open(store)
    assert grown.manifest["extra"]["appended"] == 3, "only the new file's items were embedded"
    assert grown.manifest["extra"]["embedded"] == 3
    record = json.loads((Path(campaign_uri) / "rounds/001/metrics.json").read_text())
    assert record["items_added"] == 3
    assert record["index_rows"] == json.loads((Path(index) / "manifest.json").read_text())["ntotal"]
    dataset = campaign.dataset()
    with np.load(Path(campaign_uri) / "rounds/001/pool/pool.npz") as saved:
        reachable = set(dataset.external_ids(saved["ids"])) | {row["id"] for row in campaign.state().batch}
    assert {f"near-{i}" for i in labeled} <= reachable


def normalized(text: str) -> str:
    """Golden files ignore the SDK version and the image tag (checked on their own below)."""
    text = re.sub(r"sdkVersion: kfp-[0-9.]+", "sdkVersion: kfp-X", text)
    return text.replace(IMAGE, "IMAGE")


def test_compiled_pipelines_match_the_golden_files(tmp_path):
    # `seals-al compile` in a fresh interpreter, as a user runs it: YAML styles depend on what else
    # is imported (hera registers its own string representer), so not in this test process.
    done = subprocess.run(
        [sys.executable, "-m", "seals_al.cli", "compile", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(tmp_path.glob("*.yaml"))
    assert [p.name for p in written] == sorted(pipelines())
    assert [p.name for p in written] == sorted(p.name for p in COMPILED.glob("*.yaml"))
    for path in written:
        golden = COMPILED / path.name
        assert normalized(path.read_text()) == normalized(golden.read_text()), (
            f"{path.name} changed: run `seals-al compile` and review the diff"
        )


def test_every_component_runs_the_one_image_tagged_with_the_version():
    assert IMAGE.endswith(f":{__version__}")
    for golden in COMPILED.glob("*.yaml"):
        images = set(re.findall(r"image: (\S+)", golden.read_text()))
        assert images == {IMAGE}, golden.name


def compiled_with(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seals_al.cli", "compile", "--out", str(tmp_path), *flags],
        capture_output=True,
        text=True,
    )


def test_every_task_asks_for_resources_and_the_campaign_steps_are_retried():
    import yaml

    spec, platform = yaml.safe_load_all((COMPILED / "seals_looped.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        resources = executor["container"]["resources"]
        assert {"cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"} <= set(resources), name
    waits = [e for n, e in executors.items() if "wait-for-labels" in n]
    assert waits[0]["container"]["resources"]["memoryLimit"] < 1, "waiting is tiny (GB)"
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["init-campaign"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in tasks["embed"], "embed is not a campaign step"
    # No workspace: the tasks share nothing but object storage, so a stock cluster (whose default
    # storage class is ReadWriteOnce) runs them; each pod caches on its own disk.
    assert "pipelineConfig" not in platform["platforms"]["kubernetes"]
    assert "workspace_path" not in (COMPILED / "seals_looped.yaml").read_text()


def test_compile_settings_change_the_workspace_and_resources(tmp_path):
    import yaml

    done = compiled_with(
        tmp_path, "--workspace-size", "20Gi", "--resources", "select_round=4,16Gi", "--retries", "0",
        "--label-tool-secret", "",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "seals_one_round.yaml").read_text()
    spec, platform = yaml.safe_load_all(text)
    assert "label-push" not in text, "no labeling tool step without its Secret"
    workspace = platform["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]
    assert workspace["size"] == "20Gi", "a workspace when asked for"
    assert workspace["kubernetes"]["pvcSpecPatch"] == {"accessModes": ["ReadWriteMany"]}
    assert "{{$.workspace_path}}" in text
    select = spec["deploymentSpec"]["executors"]["exec-select-round"]["container"]["resources"]
    assert select["cpuRequest"] == select["cpuLimit"] == 4
    assert "retryPolicy" not in text
    bad = compiled_with(tmp_path, "--resources", "selector=1,1Gi")
    assert bad.returncode == 2
    assert "unknown component 'selector'" in bad.stderr


def test_the_label_tool_steps_read_an_optional_secret_and_nothing_else_does():
    import yaml

    for name in ("seals_looped.yaml", "seals_one_round.yaml"):
        spec, platform = yaml.safe_load_all((COMPILED / name).read_text())
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        with_secret = {n for n, e in executors.items() if "secretAsEnv" in e}
        steps = ("exec-label-ingest", "exec-label-push", "exec-wait-for-labels")
        assert with_secret == {n for n in executors if n.startswith(steps)}, name
        assert "exec-label-push" in with_secret, name
        for n in with_secret:
            (secret,) = executors[n]["secretAsEnv"]
            assert secret["secretName"] == "label-tool"
            assert secret["optional"] is True, "a pipeline runs the same without the Secret"
            assert secret["keyToEnv"] == [
                {"envVar": "LABEL_TOOL", "secretKey": "tool"},
                {"envVar": "LABEL_TOOL_URL", "secretKey": "url"},
                {"envVar": "LABEL_TOOL_API_KEY", "secretKey": "api-key"},
            ]
        pushes = [t for t in _all_tasks(spec) if t.startswith("label-push")]
        assert pushes, f"{name}: a push after each round's select"
    for name in ("seals_simulation.yaml", "seals_many_concepts.yaml"):
        text = (COMPILED / name).read_text()
        assert "secretAsEnv" not in text, "an oracle labels"
        assert "label-push" not in text


def _all_tasks(spec: dict) -> list[str]:
    names = list(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        names += list(component.get("dag", {}).get("tasks", {}))
    return names


def test_one_compile_option_hands_embed_the_graph_and_score_to_a_beam_runner(tmp_path):
    """`seals-al compile --beam-args="..."`: embed, build_index (which then builds the neighbour
    graph for the campaign's k on that runner, not the first round in its pod) and score get the
    same Beam options; an option no Beam options class knows fails the compile, naming it."""
    import yaml

    options = "--runner=DataflowRunner --project=p --region=europe-west1 --temp_location=gs://b/tmp"
    done = compiled_with(tmp_path, f"--beam-args={options}")
    assert done.returncode == 0, done.stderr
    expected = {"runtimeValue": {"constant": options.split()}}
    spec, _ = yaml.safe_load_all((tmp_path / "seals_looped.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["embed"]["inputs"]["parameters"]["beam_args"] == expected
    assert tasks["build-index"]["inputs"]["parameters"]["beam_args"] == expected
    assert tasks["build-index"]["inputs"]["parameters"]["graph_k"] == {"componentInputParameter": "k"}
    spec, _ = yaml.safe_load_all((tmp_path / "seals_one_round.yaml").read_text())
    score = spec["components"]["comp-condition-2"]["dag"]["tasks"]["score"]
    assert score["inputs"]["parameters"]["beam_args"] == expected
    done = compiled_with(tmp_path / "bad", "--beam-args=--runner=DataflowRunner --no_such_option=1")
    assert done.returncode == 2
    assert "--beam-args: unknown option(s): --no_such_option" in done.stderr
