"""Shared fixtures: synthetic clustered embeddings with non-contiguous, shuffled global row ids,
and a small CLINC150 slice embedded once per session with the real model."""

from __future__ import annotations

import ast
import csv
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from kfp import local

from seals_al.index.build import build_index
from seals_al.store import EmbeddingStore
from seals_al.store_writer import write_store

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT / "data" / "clinc150" / "clinc150.csv"
SLICE_INTENTS = ("report_fraud", "transfer", "timer", "pay_bill", "translate")
BUCKET = "seals-test"
VERSIONED = "seals-test-versioned"  # a bucket that keeps every generation of an object

# Property tests run the same examples every time (a failure reproduces; no test is flaky), with
# no example database and no per-example deadline (this machine's timings vary).
settings.register_profile("seals", derandomize=True, database=None, deadline=None, max_examples=150)
settings.load_profile("seals")

# What makes a test an integration test (`-m integration`; `make test-fast` runs the others): a
# fixture that starts or builds a real outside part, or a parameter that puts its data there.
INTEGRATION_FIXTURES = {
    "gcs_server": "the GCS emulator",
    "gcs_emulator": "the GCS emulator",
    "clinc_slice": "the real model (CLINC150 embedded)",
    "built": "the real model (CLINC150 embedded)",
    "kfp_local": "kfp.local runs",
    "label_studio": "a Label Studio server",
}
INTEGRATION_PARAMS = {"gcs", "gs"}  # storage_root(where=...) and its kin: the emulator
WORKER_PROCESSES = "--direct_running_mode=multi_processing"  # a parameter that starts Beam workers


def _integration_param(value: object) -> bool:
    if isinstance(value, str):
        return value in INTEGRATION_PARAMS
    return isinstance(value, list | tuple) and WORKER_PROCESSES in value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ())) & INTEGRATION_FIXTURES.keys()
        params = getattr(getattr(item, "callspec", None), "params", {}).values()
        if fixtures or any(_integration_param(p) for p in params):
            item.add_marker(pytest.mark.integration)


def clustered_vectors(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres; returns (vectors, cluster of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, clusters, size=n)
    x = centres[cluster] + rng.normal(scale=0.35, size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), cluster


def shuffled_row_ids(n: int, seed: int) -> np.ndarray:
    """Non-contiguous ids with gaps, in shuffled order (never equal to positions)."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(50 * n, size=n, replace=False)) + 1_000_000
    return rng.permutation(ids).astype(np.int64)


class Synthetic:
    def __init__(self, tmp: Path, n: int = 1500, dim: int = 16, clusters: int = 30, seed: int = 0):
        self.vectors, self.cluster = clustered_vectors(n, dim, clusters, seed)
        self.row_ids = shuffled_row_ids(n, seed + 1)
        self.store: EmbeddingStore = write_store(
            tmp / "store",
            [f"item-{r}" for r in self.row_ids],
            self.vectors,
            model="synthetic",
            normalized=True,
            row_ids=self.row_ids,
            shard_rows=400,
        )
        self.index = build_index(self.store, self.row_ids, "Flat", progress=False)

    def exact_knn(self, row_id: int, k: int) -> list[int]:
        """Brute-force k nearest neighbours in float64, the query itself excluded."""
        at = int(np.flatnonzero(self.row_ids == row_id)[0])
        sims = self.vectors.astype(np.float64) @ self.vectors[at].astype(np.float64)
        sims[at] = -np.inf
        return self.row_ids[np.argsort(-sims, kind="stable")[:k]].tolist()


@pytest.fixture
def synthetic(tmp_path: Path) -> Synthetic:
    return Synthetic(tmp_path)


@pytest.fixture
def synthetic_items(tmp_path: Path):
    """A labeled item table with precomputed embeddings (no model): 600 rows in 12 clusters, the
    concept "c0" is cluster 0, every fifth row is in the test split. Returns its DataConfig."""
    from seals_al.settings import DataConfig

    vectors, cluster = clustered_vectors(600, 16, 12, seed=5)
    np.save(tmp_path / "vectors.npy", vectors)
    with (tmp_path / "items.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label", "split"])
        for n, c in enumerate(cluster):
            writer.writerow(
                [f"i{n:04d}", f"item <{n}> of cluster {c}", f"c{c}", "test" if n % 5 == 0 else "train"]
            )
    return DataConfig(
        data=str(tmp_path / "items.csv"),
        embeddings=str(tmp_path / "vectors.npy"),
        truth_column="label",
        split_column="split",
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.fixture(scope="session")
def clinc_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All rows of a few CLINC150 intents (750 rows) as a CSV."""
    path = tmp_path_factory.mktemp("clinc") / "slice.csv"
    with CLINC.open(newline="") as src, path.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["label"] in SLICE_INTENTS)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the session, so the slice is embedded by the real model once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def label_studio():
    """A real Label Studio server on 127.0.0.1 (tests/labelstudio_server.py), one per session."""
    from .labelstudio_server import running

    with running() as server:
        yield server


@pytest.fixture
def ls_env(label_studio, monkeypatch):
    """The environment a campaign reads Label Studio's URL and token from, set to the server."""
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    return label_studio


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server on a free loopback port for the whole session (tests/gcs_server.py): it
    enforces generation preconditions and serves byte ranges, as GCS does."""
    from .gcs_server import running

    with running(BUCKET, VERSIONED, versioned=(VERSIONED,)) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator(gcs_server) -> str:
    """The emulator's URL (STORAGE_EMULATOR_HOST is set to it for the session)."""
    return gcs_server.url


def storage_root(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh place for a test's published folders: ``tmp_path`` (local) or a prefix of the
    emulated bucket (gcs, the emulator started), with this machine's cache in ``tmp_path``."""
    request.getfixturevalue("monkeypatch").setenv("SEALS_CACHE_DIR", str(tmp_path / "cache"))
    if where == "local":
        return str(tmp_path)
    request.getfixturevalue("gcs_emulator")
    return f"gs://{BUCKET}/{uuid.uuid4().hex}"


def modules_loaded_by(args: list[str]) -> set[str]:
    """The top-level modules a seals-al command loads, run in a fresh process as a pod runs it
    (the command must succeed)."""
    code = (
        "import sys\n"
        "from seals_al.cli import main\n"
        f"assert main({args!r}) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(ast.literal_eval(done.stdout.splitlines()[-1]))


@pytest.fixture(scope="session")
def built(tmp_path_factory, clinc_slice) -> dict:
    """Embeddings and index over U of the CLINC150 slice, published once for the session (Beam
    and faiss, for real), so that every test's pipeline finds them and skips the work, as a re-run
    on a cluster does, and no test depends on another having run first."""
    from seals_al.dataset import index_over_u
    from seals_al.embed.pipeline import ensure_embeddings

    root = tmp_path_factory.mktemp("built")
    uris = {
        "items_uri": str(clinc_slice),
        "embeddings_uri": str(root / "embeddings"),
        "index_uri": str(root / "index"),
    }
    ensure_embeddings(uris["items_uri"], uris["embeddings_uri"])
    index_over_u(uris["items_uri"], uris["embeddings_uri"], uris["index_uri"], split_column="split")
    return uris


@pytest.fixture
def kfp_local(tmp_path, monkeypatch, cache_dir) -> Path:
    monkeypatch.setenv("SEALS_CACHE_DIR", str(cache_dir))
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def campaign_over_built(built: dict, uri: str, batch_size: int = 20):
    """A report_fraud campaign over the session's published embeddings and index, seeded from
    ground truth (5 + 95), as the pipelines' tests start one."""
    from seals_al.campaign import Campaign, CampaignConfig, ensure_campaign
    from seals_al.labeltools.oracle import seed_file_from_truth
    from seals_al.settings import DataConfig, RoundConfig

    data = DataConfig(
        data=built["items_uri"],
        embeddings=built["embeddings_uri"],
        index=built["index_uri"],
        truth_column="label",
        split_column="split",
    )
    config = CampaignConfig("report_fraud", "", data, RoundConfig(batch_size=batch_size))
    ensure_campaign(config, uri, lambda: seed_file_from_truth(config))
    return Campaign(uri, progress=False)
