"""Prepared data read by id, and arrays on disk read by row: what a round reads instead of the item
table and whole files (seals_al.prepared, seals_al.arrays)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seals_al import columns
from seals_al.arrays import SAMPLE_EVERY, ArrayFile, open_array, search_sorted, sorted_unique, sparse_sample
from seals_al.campaign import Campaign, CampaignConfig, init
from seals_al.dataset import Dataset
from seals_al.errors import SealsError
from seals_al.items import Items
from seals_al.labeltools.oracle import label_open_batch, seed_file_from_truth
from seals_al.settings import RoundConfig
from seals_al.simulate import SimulationConfig, simulate
from seals_al.storage import open_storage
from seals_al.store import RowLookup
from seals_al.store_writer import write_store

from .conftest import BUCKET, clustered_vectors, shuffled_row_ids


def test_array_file_reads_what_numpy_reads(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "ints": rng.integers(0, 1 << 40, size=50_000),  # 8-byte rows: nearby positions share a read
        "rows": rng.normal(size=(3_000, 40)).astype(np.float32),  # 160-byte rows
        "wide": rng.normal(size=(500, 2_000)).astype(np.float32),  # rows over a page: one read each
    }
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
        on_disk = ArrayFile(tmp_path / f"{name}.npy")
        assert on_disk.shape == array.shape
        assert on_disk.dtype == array.dtype
        assert len(on_disk) == len(array)
        n = len(array)
        cases = [
            rng.integers(0, n, 300),  # unsorted, with repeats
            np.sort(rng.choice(n, 200, replace=False)),  # sorted and unique
            np.arange(n // 3, n // 3 + 50),  # one run
            np.asarray([n - 1, 0, n - 1]),
            np.empty(0, np.int64),
        ]
        for positions in cases:
            np.testing.assert_array_equal(on_disk[positions], array[positions])
        np.testing.assert_array_equal(on_disk[10:20], array[10:20])
        np.testing.assert_array_equal(on_disk[n - 5 : n + 10], array[n - 5 :])
        np.testing.assert_array_equal(on_disk[::97], array[::97])
        np.testing.assert_array_equal(on_disk[-1], array[-1])
        # No rows (a data set with no evaluation split asks for its none): read as numpy would.
        np.testing.assert_array_equal(on_disk[7:7], array[7:7])
        with pytest.raises(SealsError, match=rf"{name}.npy: position {n} outside 0..{n - 1}"):
            on_disk[np.asarray([0, n])]
    # The three ways of opening read the same values.
    for access in ("rows", "mapped", "ram"):
        np.testing.assert_array_equal(
            open_array(tmp_path / "rows.npy", access)[[5, 1, 5]], arrays["rows"][[5, 1, 5]]
        )


@pytest.mark.hostile
def test_bad_npy_files_are_errors_naming_the_file(tmp_path):
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(SealsError, match=r"text.npy: not a .npy array"):
        ArrayFile(tmp_path / "text.npy")
    np.save(tmp_path / "cut.npy", np.arange(1000))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-100])
    with pytest.raises(SealsError, match=r"cut.npy: truncated"):
        ArrayFile(tmp_path / "cut.npy")
    with pytest.raises(SealsError, match=r"missing.npy: no such file"):
        ArrayFile(tmp_path / "missing.npy")
    with pytest.raises(SealsError, match="unknown array access 'disk'"):
        open_array(tmp_path / "cut.npy", "disk")


def test_search_on_disk_matches_numpy_with_runs_across_blocks(tmp_path):
    rng = np.random.default_rng(1)
    # Long runs of one value cross the sparse sample's block boundaries.
    values = np.sort(
        np.concatenate([rng.integers(0, 1000, 20_000), np.full(3 * SAMPLE_EVERY, 500), [-5, 2000]])
    ).astype(np.int64)
    np.save(tmp_path / "sorted.npy", values)
    on_disk = ArrayFile(tmp_path / "sorted.npy")
    wanted = np.concatenate(
        [rng.integers(-10, 2010, 2_000), [500, values[0], values[-1], values[SAMPLE_EVERY]]]
    )
    got = search_sorted(on_disk, wanted, sparse_sample(on_disk))
    np.testing.assert_array_equal(got, np.searchsorted(values, wanted))
    np.testing.assert_array_equal(search_sorted(values, wanted, None), np.searchsorted(values, wanted))


@pytest.mark.parametrize("kind", ["positions", "permutation", "gaps"])
def test_row_lookup_in_memory_and_on_disk(tmp_path, kind):
    """The three cases a lookup tells apart by two values, each against a dict."""
    n = 30_000
    rng = np.random.default_rng(2)
    row_ids = {
        "positions": np.arange(n),
        "permutation": rng.permutation(n),
        "gaps": shuffled_row_ids(n, 3),
    }[kind].astype(np.int64)
    order = np.argsort(row_ids, kind="stable")
    np.save(tmp_path / "sorted.npy", row_ids[order])
    np.save(tmp_path / "order.npy", order)
    lookups = [
        RowLookup(row_ids, "in memory"),
        RowLookup.presorted(ArrayFile(tmp_path / "sorted.npy"), ArrayFile(tmp_path / "order.npy"), "on disk"),
    ]
    expected = {int(r): p for p, r in enumerate(row_ids)}
    asked = rng.choice(row_ids, 500)
    for lookup in lookups:
        assert lookup(asked).tolist() == [expected[int(r)] for r in asked]
        with pytest.raises(SealsError, match=r"unknown row id -1"):
            lookup(np.asarray([int(row_ids[0]), -1]))
        missing = int(row_ids.max()) + 1
        with pytest.raises(SealsError, match=rf"unknown row id {missing}"):
            lookup(np.asarray([missing]))


def _items_csv(path: Path, n: int = 400) -> Path:
    vectors, cluster = clustered_vectors(n, 8, 6, seed=4)
    lines = ["id,text,label,split"]
    lines += [
        f"id-{n_:05d},text of {n_} \u00e9,c{c},{'test' if n_ % 4 == 0 else 'train'}"
        for n_, c in enumerate(cluster)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    np.save(path.with_suffix(".npy"), vectors)
    return path


def _config(tmp_path: Path, **overrides) -> CampaignConfig:
    items = _items_csv(tmp_path / "items.csv")
    (tmp_path / "seeds.csv").write_text("id,label\n")
    config = CampaignConfig.from_json(
        {
            "concept": "c0",
            "data": str(items),
            "seed_labels": str(tmp_path / "seeds.csv"),
            "embeddings": str(items.with_suffix(".npy")),
            "truth_column": "label",
            "split_column": "split",
            "cache_dir": str(tmp_path / "cache"),
            "k": 10,
            "batch_size": 8,
            **overrides,
        },
        "test",
    )
    return config


def test_prepared_lookups_agree_with_the_item_table(tmp_path):
    config = _config(tmp_path)
    items = Items.load(config.dataset)
    for access in ("rows", "mapped"):
        dataset = Dataset.prepare(config.dataset, progress=False, access=access)
        p = dataset.prepared
        order = np.random.default_rng(0).permutation(len(items.ids))[:50]
        asked = [items.ids[i] for i in order]
        np.testing.assert_array_equal(p.find(asked), order)
        assert p.find(["nope", asked[0], ""]).tolist() == [-1, order[0], -1]
        assert p.ids_at(order) == asked
        assert p.texts_at(order) == [items.texts[i] for i in order]
        assert dataset.truth_of(asked, "c0") == [int(items.truth[i] == "c0") for i in order]
        assert dataset.positives_in_u("c0") == int(((items.truth == "c0") & ~items.is_eval).sum())
        np.testing.assert_array_equal(dataset.eval_rows, np.flatnonzero(items.is_eval))
        np.testing.assert_array_equal(
            dataset.eval_truth("c0"), (items.truth[items.is_eval] == "c0").astype(int)
        )
        np.testing.assert_array_equal(dataset.u_rows, np.flatnonzero(~items.is_eval))
        eval_id, u_id = items.ids[0], items.ids[1]  # row 0 is in the test split, row 1 is not
        assert eval_id in dataset.id_set()
        assert eval_id not in dataset.id_set(in_u=True)
        assert u_id in dataset.id_set(in_u=True)
        assert "nope" not in dataset.id_set()
        with pytest.raises(SealsError, match=r"unknown id 'nope'"):
            dataset.row_ids_of([u_id, "nope"])
        whole = dataset.items()
        assert whole.ids == items.ids
        assert whole.texts == items.texts
        np.testing.assert_array_equal(whole.truth, items.truth)
        np.testing.assert_array_equal(whole.is_eval, items.is_eval)


def test_ids_with_the_same_hash_are_told_apart(tmp_path, monkeypatch):
    """Every id hashed alike: a lookup still finds each id by comparing the ids themselves."""
    monkeypatch.setattr(columns, "hash64", lambda ids: np.zeros(len(ids), np.uint64))
    config = _config(tmp_path)
    dataset = Dataset.prepare(config.dataset, progress=False)
    items = dataset.items()
    asked = [items.ids[7], items.ids[300], "absent"]
    assert dataset.prepared.find(asked).tolist() == [7, 300, -1]


def test_a_store_whose_row_ids_are_not_positions(tmp_path):
    """A store written with its own row ids in any order (as the Beam pipeline writes them):
    lookups by id and by row id go through the prepared order, never the store's id table."""
    config = _config(tmp_path)
    items = Items.load(config.dataset)
    vectors = np.load(tmp_path / "items.npy")
    row_ids = shuffled_row_ids(len(items.ids), 9)
    store = write_store(tmp_path / "store", items.ids, vectors, model="m", normalized=True, row_ids=row_ids)
    data = replace(config.dataset, embeddings=str(store.path))
    dataset = Dataset.prepare(data, progress=False)
    asked = [items.ids[i] for i in (3, 250, 17)]
    rows = dataset.row_ids_of(asked)
    assert rows.tolist() == row_ids[[3, 250, 17]].tolist()
    assert dataset.external_ids(rows) == asked
    np.testing.assert_allclose(dataset.store.vectors(rows), vectors[[3, 250, 17]], rtol=1e-6)
    assert dataset.store._ids is None, "the store's id table was never read"


def test_simulations_read_by_rows_or_mapped_select_the_same(tmp_path):
    config = _config(tmp_path)
    sim = SimulationConfig(
        concept="c0", learning=RoundConfig(k=10, batch_size=8), seed_negatives=20, rounds=3
    )
    runs = []
    for access in ("rows", "mapped", "ram"):
        dataset = Dataset.prepare(config.dataset, progress=False, access=access)
        summary = simulate(dataset, sim, tmp_path / f"out-{access}", progress=False)
        runs.append([{k: v for k, v in r.items() if k != "selection_seconds"} for r in summary["rounds"]])
        runs[-1].append((tmp_path / f"out-{access}" / "rounds" / "002" / "selected.jsonl").read_text())
    assert runs[0] == runs[1] == runs[2]


def test_a_round_reads_no_item_table_and_a_changed_one_is_prepared_again(tmp_path):
    """After the first round prepared the data, rounds read the prepared columns: an items file
    whose bytes are replaced (same size, same modification time) goes unnoticed. A file that
    changed (a new time) is a new data version: prepared again, so its problems are found."""
    config = _config(tmp_path)
    uri = str(tmp_path / "campaign")
    init(config, uri, seed_file_from_truth(config))
    campaign = Campaign(uri, progress=False)
    campaign.round()
    items = Path(config.dataset.data)
    stat = items.stat()
    original = items.read_bytes()
    items.write_bytes(b"x" * len(original))
    os.utime(items, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    label_open_batch(Campaign(uri, progress=False))
    record = Campaign(uri, progress=False).round()
    assert record is not None
    assert record["round"] == 1
    os.utime(items, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(SealsError, match=r"items.csv"):
        label_open_batch(Campaign(uri, progress=False))
    items.write_bytes(original)  # the data back as it was: a round goes on from round 1
    label_open_batch(Campaign(uri, progress=False))
    assert Campaign(uri, progress=False).round()["round"] == 2


def test_a_removed_store_is_prepared_again(tmp_path):
    config = _config(tmp_path)
    first = Dataset.prepare(config.dataset, progress=False)
    shutil.rmtree(first.store.path)
    again = Dataset.prepare(config.dataset, progress=False)
    assert (again.store.path / "manifest.json").is_file()
    assert again.row_ids_of(["id-00001"]).tolist() == [1]


def test_items_on_gcs_are_prepared_once_per_object_generation(tmp_path, gcs_emulator):
    """A gs:// items file: its generation is its version, read without downloading it."""
    config = _config(tmp_path)
    bucket = open_storage(f"gs://{BUCKET}/prepared-test")
    original = Path(config.dataset.data).read_bytes()
    bucket.write_bytes("items.csv", original)
    data = replace(config.dataset, data=f"gs://{BUCKET}/prepared-test/items.csv")
    first = Dataset.prepare(data, progress=False)
    assert Dataset.prepare(data, progress=False).prepared.key == first.prepared.key
    assert first.row_ids_of(["id-00002"]).tolist() == [2]
    bucket.write_bytes("items.csv", original.replace(b"text of 2 ", b"new text of 2 "))
    second = Dataset.prepare(data, progress=False)
    assert second.prepared.key != first.prepared.key
    assert second.texts_of(np.asarray([2])) == ["new text of 2 \u00e9"]


def test_precomputed_vectors_are_imported_a_shard_at_a_time(tmp_path, monkeypatch):
    """A .npy is normalized, hashed and written shard by shard (never copied whole): the same
    cache key and vectors as normalizing it whole."""
    from seals_al.embed import local

    vectors = np.random.default_rng(3).normal(size=(2_500, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    monkeypatch.setattr(local, "SHARD_ROWS", 1_000)
    ids = [f"x{i}" for i in range(2_500)]
    store = local.import_embeddings(tmp_path / "v.npy", ids, cache_dir=tmp_path / "cache")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert [s["rows"] for s in store.manifest["shards"]] == [1_000, 1_000, 500]
    assert store.path.name == "imported-" + hashlib.sha256(unit.tobytes()).hexdigest()[:24]
    np.testing.assert_array_equal(store.vectors(np.arange(2_500)), unit)
    vectors[1_700, :] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    with pytest.raises(SealsError, match=r"v.npy: embedding of id 'x1700' has NaN or infinite values"):
        local.import_embeddings(tmp_path / "v.npy", ids, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("access", ["rows", "mapped"])
def test_strings_read_the_same_one_by_one_and_as_one_span(tmp_path, access):
    """A scan reads the strings' span in one go; a few strings far apart, each on its own: both
    give every string of the columns asked for, empty and non-ASCII ones included, in the order
    asked."""
    values = [f"id-{i}-{'é' * (i % 7)}" if i % 11 else "" for i in range(200_000)]  # over 1 MiB
    texts = [f"text {i}" * (i % 3) for i in range(200_000)]
    columns.Strings.write(tmp_path, {"ids": values, "texts": texts})
    strings = columns.Strings(tmp_path, ["ids", "texts"], access)
    everything = np.random.default_rng(0).permutation(len(values))
    assert strings.at(everything) == [[values[i] for i in everything]]
    far = np.asarray([199_999, 0, 11, 100_000])  # 4 strings across the whole file
    assert strings.at(far, ["ids", "texts"]) == [[values[i] for i in far], [texts[i] for i in far]]
    assert strings.at(far, ["texts"]) == [[texts[i] for i in far]]
    assert strings.at(np.arange(5, 9), ["ids"]) == [values[5:9]]
    assert strings.at([], ["ids", "texts"]) == [[], []]


def test_sorted_unique_is_numpys_unique():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 50, 1000)
    hashes = rng.integers(0, 2**62, 1000).astype(np.uint64)
    for values in (small, hashes, np.sort(small), np.zeros(0, np.int64)):
        got = sorted_unique(values)
        np.testing.assert_array_equal(got, np.unique(values))
        assert got.dtype == values.dtype
