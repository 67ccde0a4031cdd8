"""Folders shared through object storage (seals_al.published) against a real GCS emulator: what a
pod sees on a cluster, where nothing but the bucket is shared between tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.errors import SealsError
from seals_al.index.directory import INDEX_FORMAT, open_index_dir
from seals_al.published import LISTING, check_target, materialize, output_folder, publish, read_manifest_at
from seals_al.storage import open_storage
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import EmbeddingStore
from seals_al.store_writer import write_store

from .conftest import BUCKET
from .test_campaign import write_config


@pytest.fixture
def uri(gcs_emulator) -> str:
    return f"gs://{BUCKET}/published/{uuid.uuid4().hex}"


def small_store(path: Path) -> EmbeddingStore:
    rng = np.random.default_rng(0)
    return write_store(
        path, [f"i{n}" for n in range(50)], rng.normal(size=(50, 8)), model="m", normalized=False
    )


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_published_folder_comes_back_byte_for_byte_and_is_downloaded_once(tmp_path, uri):
    store = small_store(tmp_path / "store")
    listing = publish(store.path, uri, STORE_FORMAT, progress=False)
    assert set(listing["files"]) == set(folder_bytes(store.path))
    got = materialize(uri, "an embeddings store", tmp_path / "cache", progress=False)
    assert {k: v for k, v in folder_bytes(got).items() if k != LISTING} == folder_bytes(store.path)
    assert EmbeddingStore.open(got, verify=True).digest() == store.digest()
    # The cache copy is used from now on: the bucket's shards are not read again.
    for name in listing["files"]:
        if name.startswith("shard-"):
            open_storage(uri).delete(name)
    assert materialize(uri, "an embeddings store", tmp_path / "cache", progress=False) == got
    # Another cache (another pod without a workspace) reads the bucket, which is now partial.
    with pytest.raises(SealsError, match=r"shard-00000\.npy: listed in published\.json but missing"):
        materialize(uri, "an embeddings store", tmp_path / "other-cache", progress=False)
    assert not any((tmp_path / "other-cache" / "published").iterdir()), "nothing half-downloaded is left"


def test_nothing_published_or_a_changed_object_is_an_error_naming_it(tmp_path, uri):
    with pytest.raises(SealsError, match=rf"{uri}: not an index directory: no published\.json"):
        materialize(uri, "an index directory", tmp_path / "cache")
    small_store(tmp_path / "store")
    publish(tmp_path / "store", uri, STORE_FORMAT, progress=False)
    open_storage(uri).write_bytes("ids.parquet", b"not the bytes that were published")
    with pytest.raises(SealsError, match=r"ids\.parquet: does not match its checksum in published\.json"):
        materialize(uri, "an embeddings store", tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "published").iterdir())


def test_two_processes_filling_one_cache_at_once_end_with_one_complete_copy(tmp_path, uri):
    small_store(tmp_path / "store")
    publish(tmp_path / "store", uri, STORE_FORMAT, progress=False)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: materialize(uri, "a store", cache, progress=False), range(4)))
    code = f"from seals_al.published import materialize; print(materialize({uri!r}, 's', {str(cache)!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(set(paths)) == 1
    assert Path(other.stdout.strip()) == paths[0]
    assert [p.name for p in (cache / "published").iterdir()] == [paths[0].name], "no temporary left"
    assert EmbeddingStore.open(paths[0], verify=True).manifest["count"] == 50


def test_a_republished_folder_is_a_new_version_and_old_files_are_removed(tmp_path, uri):
    small_store(tmp_path / "a")
    publish(tmp_path / "a", uri, STORE_FORMAT, progress=False)
    first = materialize(uri, "a store", tmp_path / "cache", progress=False)
    (tmp_path / "a" / "extra.txt").write_text("one more file")
    publish(tmp_path / "a", uri, STORE_FORMAT, progress=False)
    second = materialize(uri, "a store", tmp_path / "cache", progress=False)
    assert second != first
    assert (second / "extra.txt").read_text() == "one more file"
    (tmp_path / "a" / "extra.txt").unlink()
    publish(tmp_path / "a", uri, STORE_FORMAT, progress=False)
    assert "extra.txt" not in open_storage(uri).list(), "a file the new listing does not name is removed"


def test_targets_are_checked_before_any_work(tmp_path, uri):
    with pytest.raises(SealsError, match="unsupported URI scheme"):
        check_target("s3://bucket/store", STORE_FORMAT)
    with pytest.raises(SealsError, match="is not a GCS bucket name"):
        check_target("gs://Bad_Bucket/store", STORE_FORMAT)
    open_storage(uri).write_text("notes.txt", "someone else's")
    with pytest.raises(SealsError, match=r"holds objects but no published\.json"):
        check_target(uri, STORE_FORMAT)
    other = f"{uri}-index"
    small_store(tmp_path / "store")
    publish(tmp_path / "store", other, STORE_FORMAT, progress=False)
    with pytest.raises(SealsError, match="holds a 'seals-embeddings/1' output, not an earlier seals-index/1"):
        check_target(other, INDEX_FORMAT)
    check_target(other, STORE_FORMAT)  # an earlier output of the same kind may be replaced
    ran = []
    with pytest.raises(SealsError, match="holds objects but no published"), output_folder(uri, INDEX_FORMAT):
        ran.append("the writer")
    assert not ran, "the writer never starts"


def test_embed_index_and_campaign_entirely_on_gcs(
    tmp_path, clinc_slice, cache_dir, gcs_emulator, monkeypatch
):
    """The cluster path without a shared disk: items, embeddings (Beam), index, neighbour graph and
    campaign all in the bucket; every reader materializes what it needs into its own cache."""
    from seals_al.cli import main
    from seals_al.dataset import index_over_u

    root = f"gs://{BUCKET}/cluster/{uuid.uuid4().hex}"
    open_storage(root).write_bytes("items.csv", clinc_slice.read_bytes())
    items, store, index = f"{root}/items.csv", f"{root}/embeddings", f"{root}/index"
    pod = {"SEALS_CACHE_DIR": str(tmp_path / "pod-1")}
    run = [sys.executable, "-m", "seals_al.cli"]
    subprocess.run([*run, "embed", f"--input={items}", f"--output={store}"], env=_env(pod), check=True)
    assert read_manifest_at(store, STORE_FORMAT)["count"] == 750
    every = f"{root}/index-of-every-row"
    subprocess.run([*run, "build-index", store, every, "--recall-queries=20"], env=_env(pod), check=True)
    assert open_storage(every).exists(LISTING)
    pod_2 = materialize(every, "an index", tmp_path / "pod-2", progress=False)
    assert open_index_dir(pod_2).ntotal == 750
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "pod-2"))
    index_over_u(items, store, index, split_column="split", recall_queries=0)  # what build_index runs

    config = CampaignConfig.from_yaml(
        write_config(tmp_path, clinc_slice, cache_dir, data=items, embeddings=store, index=index)
    )
    config = replace(config, dataset=replace(config.dataset, cache_dir=None))  # each pod its own
    campaign = f"{root}/campaign"
    init(config, campaign)
    for pod_cache in ("pod-3", "pod-4"):  # each round in a new "pod" with an empty cache
        env = _env({"SEALS_CACHE_DIR": str(tmp_path / pod_cache)})
        done = subprocess.run([*run, "round", campaign], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if pod_cache == "pod-3":
            batch = Campaign(campaign, progress=False).state().pending
            labels = "id,label\n" + "".join(f"{r['id']},0\n" for r in batch)
            open_storage(campaign).write_text("inbox/000/labels.csv", labels)
    assert Campaign(campaign, progress=False).state().round == 1
    graphs = open_storage(f"{index}/graphs").list()
    assert any(k.endswith(LISTING) for k in graphs), "the neighbour graph is published beside the index"
    assert not (tmp_path / "pod-4" / "graphs").exists(), "the second pod read the graph, never built it"
    assert main(["build-index", store, f"{root}/campaign"]) == 2, "a campaign is no index to replace"


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def test_index_over_u_reuses_a_published_index_reading_only_its_manifest(tmp_path, clinc_slice, uri):
    from seals_al.dataset import index_over_u
    from seals_al.embed.pipeline import ensure_embeddings

    store, index = f"{uri}/embeddings", f"{uri}/index"
    manifest, reused = ensure_embeddings(str(clinc_slice), store)
    assert not reused
    assert manifest["count"] == 750
    assert ensure_embeddings(str(clinc_slice), store) == (manifest, True)
    built, reused = index_over_u(str(clinc_slice), store, index, split_column="split", recall_queries=0)
    assert not reused
    again, reused = index_over_u(str(clinc_slice), store, index, split_column="split", recall_queries=0)
    assert reused
    assert again == built
    assert json.loads(open_storage(index).read_text("manifest.json")) == built
