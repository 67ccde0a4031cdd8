"""The index trained and filled by Beam workers in their own processes, sharing nothing but the
published store (a folder, or the GCS emulator): the same index files as the one-process build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seals_al.errors import SealsError
from seals_al.folders import open_published
from seals_al.index.build_pipeline import encode_with_beam
from seals_al.index.directory import build_index_dir, open_index_dir, publish_index_dir
from seals_al.published import materialize, publish
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import EmbeddingStore

from .conftest import storage_root

TWO_WORKER_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _published_store(synthetic, root: str) -> EmbeddingStore:
    uri = f"{root}/published-store"
    publish(Path(synthetic.store.uri), uri, STORE_FORMAT, progress=False)
    return EmbeddingStore.open(open_published(uri, "an embeddings store"), access="rows")


@pytest.mark.parametrize(
    ("where", "factory", "layout", "beam_args"),
    [
        # fast-scan PQ: codes added to an IVF-PQ twin and packed by faiss's conversion
        ("local", "IVF16,PQ4x4fs", "single", TWO_WORKER_PROCESSES),
        ("gcs", "IVF16,PQ4", "shards", TWO_WORKER_PROCESSES),
        ("local", "IVF16,Flat", "ondisk", []),
    ],
)
def test_beam_workers_build_the_one_process_index_file_for_file(
    synthetic, tmp_path, where, factory, layout, beam_args, request
):
    root = storage_root(where, request, tmp_path)
    store = _published_store(synthetic, root)
    rows = np.sort(synthetic.row_ids)[: len(synthetic.row_ids) - 9]  # U: not every row of the store
    options = dict(row_ids=rows, layout=layout, shard_rows=700, train_size=900, recall_queries=50)
    options["progress"] = False
    one = publish_index_dir(synthetic.store, f"{root}/one", factory, **options)
    two = publish_index_dir(store, f"{root}/two", factory, beam_args=beam_args, **options)
    one_dir = materialize(f"{root}/one", "an index directory", progress=False)
    two_dir = materialize(f"{root}/two", "an index directory", progress=False)
    assert one["files"] == two["files"]
    for name in one["files"]:
        if name == "index.faiss" and layout == "ondisk":
            continue  # it names the folder its lists were merged in; the lists are compared
        assert (one_dir / name).read_bytes() == (two_dir / name).read_bytes(), name
    assert one["recall"]["recall_at_k"] == two["recall"]["recall_at_k"]
    assert one["source"] == two["source"]
    assert two["workers_seconds"] > 0
    assert "workers_seconds" not in one
    queries = synthetic.vectors[:40]
    D1, I1 = open_index_dir(one_dir).search(queries, 10)
    D2, I2 = open_index_dir(two_dir).search(queries, 10)
    assert np.array_equal(I1, I2)
    assert np.array_equal(D1, D2)
    if where == "gcs":  # the workers' scratch folder beside the index is gone
        from seals_al.storage import open_storage

        assert open_storage(f"{root}/two.work").list() == []


@pytest.mark.hostile
def test_a_factory_beam_workers_cannot_fill_is_refused_before_any_work(synthetic, tmp_path):
    with pytest.raises(SealsError, match=r"'HNSW8'.*IVF indexes only"):
        build_index_dir(synthetic.store, tmp_path / "index", "HNSW8", beam_args=[], progress=False)
    assert not (tmp_path / "index").exists(), "nothing half-written"


@pytest.mark.hostile
def test_workers_on_other_machines_are_refused_a_store_on_this_disk(synthetic, tmp_path):
    with pytest.raises(SealsError, match=r"the store, .*store, is on this machine's disk"):
        encode_with_beam(
            synthetic.store.uri,
            np.sort(synthetic.row_ids),
            synthetic.store.dim,
            "IVF16,Flat",
            "gs://bucket/work",
            train_size=100,
            seed=0,
            beam_args=["--runner=DataflowRunner"],
        )
    with pytest.raises(SealsError, match="--environment_type=EXTERNAL: the store"):
        encode_with_beam(
            synthetic.store.uri,
            np.sort(synthetic.row_ids),
            synthetic.store.dim,
            "IVF16,Flat",
            str(tmp_path / "work"),
            train_size=100,
            seed=0,
            beam_args=["--environment_type=EXTERNAL", "--environment_config=localhost:50000"],
        )
