"""The embeddings store format, the real text encoder, its cache, and imports."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seals_al.embed.local import embed_texts, import_embeddings
from seals_al.encoder import MiniLMEncoder
from seals_al.errors import SealsError
from seals_al.store import EmbeddingStore, l2_normalize
from seals_al.store_writer import StoreWriter, write_store

from .conftest import shuffled_row_ids


def test_store_round_trip_by_global_row_id_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 12)).astype(np.float32)
    row_ids = shuffled_row_ids(1000, 3)
    ids = [f"x{i}" for i in range(1000)]
    store = write_store(tmp_path / "s", ids, x, model="m", normalized=False, row_ids=row_ids, shard_rows=300)
    assert [s["rows"] for s in store.manifest["shards"]] == [300, 300, 300, 100]
    pick = rng.permutation(1000)[:250]
    np.testing.assert_array_equal(store.vectors(row_ids[pick]), x[pick])
    np.testing.assert_array_equal(store.row_ids_of([ids[i] for i in pick]), row_ids[pick])
    assert store.external_ids(row_ids[pick[:3]]) == [ids[i] for i in pick[:3]]
    blocks = list(store.iter_chunks(128))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), x)
    assert [start for start, _ in blocks][:4] == [0, 128, 256, 300]
    assert EmbeddingStore.open(tmp_path / "s", verify=True).dim == 12
    # In RAM the four shards become one array: the same vectors, by id and in chunks.
    ram = EmbeddingStore.open(tmp_path / "s", in_memory=True)
    np.testing.assert_array_equal(ram.vectors(row_ids[pick]), x[pick])
    np.testing.assert_array_equal(np.concatenate([b for _, b in ram.iter_chunks(128)]), x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"], "no temporary directory left behind"


@pytest.mark.hostile
@pytest.mark.parametrize("in_memory", [False, True])
def test_dense_store_rejects_row_ids_out_of_range(tmp_path, in_memory):
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    write_store(tmp_path / "s", [f"x{i}" for i in range(10)], x, model="m", normalized=False, shard_rows=3)
    store = EmbeddingStore.open(tmp_path / "s", in_memory=in_memory)
    np.testing.assert_array_equal(store.vectors(np.array([9, 0, 4])), x[[9, 0, 4]])
    for bad in (10, -1):
        with pytest.raises(SealsError, match=f"unknown row id {bad}$"):
            store.vectors(np.array([3, bad, 5]))


@pytest.mark.hostile
def test_store_detects_corruption_and_unknown_ids(tmp_path):
    store = write_store(tmp_path / "s", ["a", "b"], np.eye(2, dtype=np.float32), model="m", normalized=True)
    with pytest.raises(SealsError, match="unknown id 'zz'"):
        store.row_ids_of(["a", "zz"])
    shard = tmp_path / "s" / "shard-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SealsError, match="checksum does not match"):
        EmbeddingStore.open(tmp_path / "s", verify=True)
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(SealsError, match="format 'other'"):
        EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(SealsError, match="not an embeddings store"):
        EmbeddingStore.open(tmp_path)


@pytest.mark.hostile
def test_normalize_rejects_nan_and_zero_rows_by_id():
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(x), axis=1), 1, rtol=1e-6)
    x[1, 2] = np.nan
    with pytest.raises(SealsError, match="embedding of id 'b' has NaN"):
        l2_normalize(x, ["a", "b", "c"], "vecs.npy")
    x[1] = 0
    with pytest.raises(SealsError, match=r"vecs\.npy: embedding of id 'b' is all zeros"):
        l2_normalize(x, ["a", "b", "c"], "vecs.npy")


TEXTS = ["how do i report a stolen card", "set a timer for ten minutes", "transfer $50 to savings"]


def test_real_encoder_output_is_stored_and_cached(tmp_path):
    class CountingEncoder(MiniLMEncoder):
        calls = 0

        def encode(self, texts):
            CountingEncoder.calls += 1
            return super().encode(texts)

    encoder = CountingEncoder()
    ids = ["r1", "r2", "r3"]
    store = embed_texts(ids, TEXTS, encoder=encoder, cache_dir=tmp_path, progress=False)
    expected = encoder.load().encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(store.vectors(store.row_ids_of(ids)), expected, atol=1e-5)
    assert store.dim == 384
    assert store.model == "sentence-transformers/all-MiniLM-L6-v2"
    np.testing.assert_allclose(np.linalg.norm(store.vectors(store.row_ids_of(ids)), axis=1), 1, atol=1e-5)
    calls = CountingEncoder.calls
    again = embed_texts(ids, TEXTS, encoder=encoder, cache_dir=tmp_path, progress=False)
    assert CountingEncoder.calls == calls, "a second run with the same data must not re-embed"
    assert again.path == store.path
    changed = embed_texts(
        ids, [*TEXTS[:2], "a different text"], encoder=encoder, cache_dir=tmp_path, progress=False
    )
    assert changed.path != store.path
    assert CountingEncoder.calls == calls + 1
    with pytest.raises(SealsError, match="empty text for id 'r2'"):
        embed_texts(ids, [TEXTS[0], "  ", TEXTS[2]], encoder=encoder, cache_dir=tmp_path, progress=False)


def test_import_precomputed_npy_and_parquet(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    ids = ["a", "b", "c", "d"]
    np.save(tmp_path / "e.npy", x)
    from_npy = import_embeddings(tmp_path / "e.npy", ids, cache_dir=tmp_path / "cache")
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(from_npy.vectors(from_npy.row_ids_of(ids)), expected, rtol=1e-6)
    order = [2, 0, 3, 1]  # the Parquet file lists items in another order: joined on id
    pq.write_table(
        pa.table({"id": [ids[i] for i in order], "vec": [x[i].tolist() for i in order]}),
        tmp_path / "e.parquet",
    )
    from_parquet = import_embeddings(tmp_path / "e.parquet", ids, cache_dir=tmp_path / "cache", column="vec")
    np.testing.assert_allclose(from_parquet.vectors(from_parquet.row_ids_of(ids)), expected, rtol=1e-6)
    assert import_embeddings(from_npy.path, ids).path == from_npy.path


@pytest.mark.hostile
def test_import_errors(tmp_path):
    ids = ["a", "b", "c"]
    np.save(tmp_path / "rows.npy", np.ones((2, 4), np.float32))
    with pytest.raises(SealsError, match=r"shape \(2, 4\), expected \(3, dim\)"):
        import_embeddings(tmp_path / "rows.npy", ids, cache_dir=tmp_path)
    nan = np.ones((3, 4), np.float32)
    nan[2, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(SealsError, match=r"nan\.npy: embedding of id 'c' has NaN"):
        import_embeddings(tmp_path / "nan.npy", ids, cache_dir=tmp_path)
    pq.write_table(pa.table({"id": ids, "vec": [[1.0, 2.0], [1.0], [3.0, 1.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(SealsError, match="differing lengths"):
        import_embeddings(tmp_path / "ragged.parquet", ids, cache_dir=tmp_path, column="vec")
    with pytest.raises(SealsError, match="missing column 'embedding'"):
        import_embeddings(tmp_path / "ragged.parquet", ids, cache_dir=tmp_path)
    pq.write_table(pa.table({"id": ids[:2], "embedding": [[1.0, 2.0], [1.0, 0.0]]}), tmp_path / "few.parquet")
    with pytest.raises(SealsError, match="no embedding for id 'c'"):
        import_embeddings(tmp_path / "few.parquet", ids, cache_dir=tmp_path)
    assert not (tmp_path / "embeddings").exists(), "a rejected import must write nothing"


@pytest.mark.hostile
def test_a_store_is_never_published_over_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SealsError, match=r"mine: exists, is not empty and holds no manifest\.json"):
        StoreWriter(tmp_path / "mine", dim=2, model="m", normalized=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    for item_id in ("a", "b"):  # the second time over an earlier store: replaced
        write_store(tmp_path / "s", [item_id], np.ones((1, 2), np.float32), model="m", normalized=False)
    assert EmbeddingStore.open(tmp_path / "s").ids == ["b"]


def test_store_writer_streams_shards_and_publishes_only_on_success(tmp_path):
    from seals_al.store_writer import StoreWriter

    rng = np.random.default_rng(2)
    blocks = [rng.normal(size=(n, 5)).astype(np.float32) for n in (4, 0, 3)]
    with StoreWriter(tmp_path / "s", dim=5, model="m", normalized=False, extra={"note": 1}) as writer:
        for n, block in enumerate(blocks):
            writer.add([f"{n}-{i}" for i in range(len(block))], block, np.arange(len(block)) * 10 + n)
        writer.add_file("dead_letter.jsonl", b'{"id": "x"}\n')
        assert not (tmp_path / "s").exists(), "nothing is published before the end"
    store = EmbeddingStore.open(tmp_path / "s", verify=True)
    assert len(store) == 7
    assert store.manifest["extra"] == {"note": 1}
    np.testing.assert_array_equal(
        store.vectors(np.asarray([0, 10, 20, 30, 2, 12, 22])), np.concatenate(blocks)
    )
    assert (tmp_path / "s" / "dead_letter.jsonl").read_bytes() == b'{"id": "x"}\n'
    with (
        pytest.raises(SealsError, match=r"shape \(2, 4\)"),
        StoreWriter(tmp_path / "t", dim=5, model="m", normalized=False) as writer,
    ):
        writer.add(["a", "b"], np.zeros((2, 4)))
    with (
        pytest.raises(SealsError, match="row ids must be unique"),
        StoreWriter(tmp_path / "t", dim=5, model="m", normalized=False) as writer,
    ):
        writer.add(["a", "b"], np.ones((2, 5)), np.asarray([1, 1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"], "failed writes leave nothing behind"
