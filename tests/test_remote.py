"""Reads by range on object storage (seals_al.ranges, seals_al.published.open_folder) against
fake-gcs-server: the same bytes as a local read, batches of concurrent GETs, and a file replaced
since it was published is an error, never another version's bytes."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from seals_al import ranges
from seals_al.arrays import gather, search_sorted
from seals_al.errors import SealsError
from seals_al.published import LISTING, LocalFolder, RemoteFolder, materialize, open_folder, publish
from seals_al.ranges import ReplacedError
from seals_al.storage import open_storage
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import EmbeddingStore, write_store

from .conftest import BUCKET, VERSIONED, clustered_vectors, shuffled_row_ids


@pytest.fixture
def uri(gcs_emulator) -> str:
    return f"gs://{BUCKET}/remote/{uuid.uuid4().hex}"


def arrays_folder(tmp_path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "ints": np.sort(rng.integers(0, 1 << 40, size=60_000)),  # 8-byte rows, sorted
        "rows": rng.normal(size=(4_000, 40)).astype(np.float32),  # 160-byte rows
        "wide": rng.normal(size=(300, 3_000)).astype(np.float32),  # 12 KB rows
    }
    (tmp_path / "folder").mkdir()
    for name, array in arrays.items():
        np.save(tmp_path / "folder" / f"{name}.npy", array)
    (tmp_path / "folder" / "manifest.json").write_text('{"format": "test"}\n')
    return arrays


def test_a_published_folder_reads_by_range_what_a_local_read_gives(tmp_path, uri):
    arrays = arrays_folder(tmp_path)
    publish(tmp_path / "folder", uri, "test", progress=False)
    folder = open_folder(uri, tmp_path / "cache")
    assert isinstance(folder, RemoteFolder), "nothing was downloaded to open it"
    assert not (tmp_path / "cache").exists()
    assert folder.read_bytes("manifest.json") == b'{"format": "test"}\n'
    rng = np.random.default_rng(1)
    for name, array in arrays.items():
        remote = folder.array(f"{name}.npy")
        assert (remote.shape, remote.dtype) == (array.shape, array.dtype)
        n = len(array)
        for positions in (
            rng.integers(0, n, 300),
            np.arange(n // 2, n // 2 + 70),
            np.asarray([n - 1, 0, n - 1]),
        ):
            np.testing.assert_array_equal(remote[positions], array[positions])
        np.testing.assert_array_equal(remote[5:17], array[5:17])
    wanted = np.concatenate([rng.integers(0, 1 << 40, 500), arrays["ints"][[0, 4096, -1]]])
    sorted_remote = folder.array("ints.npy")
    np.testing.assert_array_equal(
        search_sorted(sorted_remote, wanted, arrays["ints"][::4096]), np.searchsorted(arrays["ints"], wanted)
    )


def test_the_rows_of_a_step_are_one_batch_of_concurrent_requests(tmp_path, uri, monkeypatch):
    arrays = arrays_folder(tmp_path)
    publish(tmp_path / "folder", uri, "test", progress=False)
    folder = open_folder(uri, tmp_path / "cache")
    rows, wide = folder.array("rows.npy"), folder.array("wide.npy")
    picks = np.arange(0, 4_000, 400)  # 10 rows 64 KB apart: one request each
    monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
    got_rows, got_wide = gather([(rows, picks), (wide, np.asarray([3, 299]))])
    np.testing.assert_array_equal(got_rows, arrays["rows"][picks])
    np.testing.assert_array_equal(got_wide, arrays["wide"][[3, 299]])
    stats = ranges.stats()
    assert stats.batches == [(12, 10 * 160 + 2 * 12_000)], "one batch: 12 requests, just their bytes"
    assert stats.requests == 12
    # Rows less than the merge gap apart are one request, the gap read through.
    monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
    np.testing.assert_array_equal(rows[[10, 12, 40]], arrays["rows"][[10, 12, 40]])
    assert ranges.stats().requests == 1
    # A long request is cut into parts fetched side by side: the same bytes.
    monkeypatch.setattr(ranges, "PART_BYTES", 100_000)
    monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
    np.testing.assert_array_equal(wide[:], arrays["wide"])
    assert ranges.stats().requests == -(-arrays["wide"].nbytes // 100_000)
    assert ranges.stats().modelled_seconds(latency=0.03, concurrency=32, bandwidth=1e8) == pytest.approx(
        -(-ranges.stats().requests // 32) * 0.03 + arrays["wide"].nbytes / 1e8
    )


def test_a_file_replaced_since_it_was_published_is_an_error_never_mixed_data(tmp_path, uri):
    arrays = arrays_folder(tmp_path)
    publish(tmp_path / "folder", uri, "test", progress=False)
    folder = open_folder(uri, tmp_path / "cache")
    rows = folder.array("rows.npy")
    np.testing.assert_array_equal(rows[[1, 2]], arrays["rows"][[1, 2]])
    replaced = arrays["rows"] + 1
    np.save(tmp_path / "other.npy", replaced)
    open_storage(uri).upload(tmp_path / "other.npy", "rows.npy")  # same size, new bytes
    with pytest.raises(ReplacedError, match=r"rows\.npy: generation \d+ is gone \(the object was replaced"):
        rows[[3]]
    with pytest.raises(ReplacedError):
        folder.read_bytes("rows.npy")
    # Opened again, the folder is as published now: its listing no longer matches the object.
    with pytest.raises(ReplacedError, match=r"rows\.npy: .*(gone|checksum)"):
        open_folder(uri, tmp_path / "cache").array("rows.npy")[[3]]


def test_on_a_versioned_bucket_a_reader_keeps_reading_the_version_it_opened(tmp_path, gcs_emulator):
    uri = f"gs://{VERSIONED}/remote/{uuid.uuid4().hex}"
    arrays = arrays_folder(tmp_path)
    publish(tmp_path / "folder", uri, "test", progress=False)
    rows = open_folder(uri, tmp_path / "cache").array("rows.npy")
    np.save(tmp_path / "folder" / "rows.npy", arrays["rows"] * 2)
    publish(tmp_path / "folder", uri, "test", progress=False)  # a new version of the folder
    np.testing.assert_array_equal(rows[[7, 3000]], arrays["rows"][[7, 3000]])
    fresh = open_folder(uri, tmp_path / "cache").array("rows.npy")
    np.testing.assert_array_equal(fresh[[7]], arrays["rows"][[7]] * 2)


def test_a_listing_without_generations_is_read_checking_each_objects_size(tmp_path, uri):
    """A folder published before listings named generations: each object's metadata is read
    once; one whose size differs from the listing's is refused."""
    import json

    arrays = arrays_folder(tmp_path)
    publish(tmp_path / "folder", uri, "test", progress=False)
    storage = open_storage(uri)
    listing = json.loads(storage.read_bytes(LISTING))
    for entry in listing["files"].values():
        entry.pop("generation")
        entry.pop("npy", None)
    storage.write_bytes(LISTING, json.dumps(listing).encode())
    folder = open_folder(uri, tmp_path / "cache")
    np.testing.assert_array_equal(folder.array("rows.npy")[[9]], arrays["rows"][[9]])
    storage.write_bytes("ints.npy", b"short")
    with pytest.raises(ReplacedError, match=r"ints\.npy: 5 bytes, but published.json lists"):
        folder.array("ints.npy")


def test_a_version_in_the_cache_is_read_there_and_a_missing_one_is_none(tmp_path, uri):
    arrays_folder(tmp_path)
    assert open_folder(uri, tmp_path / "cache") is None
    publish(tmp_path / "folder", uri, "test", progress=False)
    local = materialize(uri, "a test folder", tmp_path / "cache", progress=False)
    folder = open_folder(uri, tmp_path / "cache")
    assert isinstance(folder, LocalFolder)
    assert folder.local == local


def test_a_store_on_gcs_gathers_rows_by_row_id_as_a_local_one_does(tmp_path, uri):
    vectors, _ = clustered_vectors(3_000, 24, 10, seed=2)
    row_ids = shuffled_row_ids(3_000, 5)
    store = write_store(
        tmp_path / "store",
        [f"i{r}" for r in row_ids],
        vectors,
        model="m",
        normalized=True,
        row_ids=row_ids,
        shard_rows=700,
    )
    publish(store.path, uri, STORE_FORMAT, progress=False)
    remote = EmbeddingStore.open(open_folder(uri, tmp_path / "cache"), access="rows")
    assert remote.digest() == store.digest()
    asked = np.random.default_rng(3).choice(row_ids, 400)
    np.testing.assert_array_equal(remote.vectors(asked), store.vectors(asked))
    assert remote.external_ids(asked[:5]) == store.external_ids(asked[:5])
    remote.remember(asked[:10], np.zeros((10, 24), np.float32))
    np.testing.assert_array_equal(remote.vectors(asked[[0, 20]])[0], np.zeros(24))
    with pytest.raises(SealsError, match="read where it is published"):
        remote.path  # noqa: B018
