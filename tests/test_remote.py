"""Reads by range on object storage (seals_al.ranges, seals_al.published.open_folder) against
fake-gcs-server: the same bytes as a local read, batches of concurrent GETs, and a file replaced
since it was published is an error, never another version's bytes."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from e2e.run import differences
from seals_al import ranges
from seals_al.arrays import gather, search_sorted
from seals_al.errors import SealsError
from seals_al.folders import LocalFolder, RemoteFolder, open_folder
from seals_al.index.build import build_index
from seals_al.index.graph import (
    GRAPH_FORMAT,
    NeighbourGraph,
    build_neighbour_graph,
    locality_order,
    write_records,
)
from seals_al.pool import CandidatePool
from seals_al.published import LISTING, materialize, publish
from seals_al.ranges import ReplacedError
from seals_al.selection import READ_AHEAD, select_seals
from seals_al.storage import open_storage
from seals_al.store import FORMAT as STORE_FORMAT
from seals_al.store import EmbeddingStore
from seals_al.store_writer import write_store
from seals_al.strategies import get_strategy
from seals_al.train import LinearModel

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


def test_fewer_round_trips_reads_through_the_smallest_gaps_while_a_round_trip_is_worth_them(monkeypatch):
    monkeypatch.setattr(ranges, "CONCURRENCY", 2)
    gaps = np.asarray([5, 1, 100, 2, 3])  # six requests: three round trips of two
    monkeypatch.setattr(ranges, "ROUND_TRIP_WORTH", 10)
    assert ranges.fewer_round_trips(gaps, 6) == 4, "1 + 2, then 3 + 5: one round trip"
    monkeypatch.setattr(ranges, "ROUND_TRIP_WORTH", 6)
    assert ranges.fewer_round_trips(gaps, 6) == 2, "3 + 5 bytes are more than a round trip is worth"
    assert ranges.fewer_round_trips(gaps, 2) == 0, "one round trip already"
    assert ranges.fewer_round_trips(np.asarray([1]), 4) == 0, "too few gaps to save one"


def test_a_batch_a_few_requests_over_a_round_trip_reads_through_its_smallest_gaps(tmp_path, uri, monkeypatch):
    arrays = arrays_folder(tmp_path)
    publish(tmp_path / "folder", uri, "test", progress=False)
    rows = open_folder(uri, tmp_path / "cache").array("rows.npy")
    picks = np.arange(0, 3_600, 300)  # 12 rows 48 KB apart: over the merge gap, one request each
    monkeypatch.setattr(ranges, "CONCURRENCY", 8)
    monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
    np.testing.assert_array_equal(rows[picks], arrays["rows"][picks])
    assert ranges.stats().requests == 8, "four gaps of 48 KB read through: one round trip, not two"
    assert ranges.stats().bytes == 12 * 160 + 4 * 299 * 160
    monkeypatch.setattr(ranges, "ROUND_TRIP_WORTH", 150_000)  # four gaps cost 191 KB: not worth it
    monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
    np.testing.assert_array_equal(rows[picks[::-1]], arrays["rows"][picks[::-1]])
    assert (ranges.stats().requests, ranges.stats().bytes) == (12, 12 * 160)


def test_a_selection_over_a_published_graph_waits_for_no_read_when_it_picks_a_member(
    synthetic, tmp_path, uri, monkeypatch
):
    """Members are picked in an order known when the round starts: their lists and the records of
    their neighbours are read ahead, a window at a time, so expanding a member costs no batch of
    its own; only a pick that arrived during the batch waits for a read. The picks are those of a
    pool over the graph on local disk."""
    index = build_index(synthetic.store, synthetic.row_ids, "IVF8,Flat", train_size=1500, progress=False)
    build_neighbour_graph(index, synthetic.store, synthetic.row_ids, 10, tmp_path / "g", progress=False)
    write_records(
        tmp_path / "g", synthetic.store, locality_order(index, np.sort(synthetic.row_ids)), progress=False
    )
    publish(tmp_path / "g", uri, GRAPH_FORMAT, progress=False)
    remote = NeighbourGraph.open(open_folder(uri, tmp_path / "cache"), access="rows")
    assert remote.has_records
    labeled = synthetic.row_ids[synthetic.cluster == 0][:6].tolist() + synthetic.row_ids[:20].tolist()
    model = LinearModel(synthetic.vectors[synthetic.cluster == 0].mean(axis=0) * 8, -5.0)
    picks = {}
    for where, graph in (("local", NeighbourGraph.open(tmp_path / "g")), ("gs", remote)):
        pool = CandidatePool(graph, synthetic.store, 10)
        pool.expand(labeled)
        monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
        selection = select_seals(pool, model, get_strategy("maxent"), 40, seed=3, round_index=1)
        picks[where] = [p.row_id for p in selection.picks]
        batches = len(ranges.stats().batches)
    chosen = set()
    arrived = 0  # picks that joined the pool during this selection
    for pick in selection.picks:
        arrived += pick.reached_from in chosen
        chosen.add(pick.row_id)
    assert picks["gs"] == picks["local"]
    assert 0 < arrived < 40, "the batch mixes members and arrivals"
    windows = -(-(40 - arrived) // READ_AHEAD)
    assert batches <= 2 * windows + arrived, f"{batches} batches for {arrived} arrivals"


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


def _campaign_data(tmp_path: Path, root: str) -> tuple[str, str, str]:
    """A synthetic data set (2,000 rows, 16-d, the concept a cluster, every fifth row held out)
    at ``root`` (local or gs://): items, a published store and an index over U (IVF, so the graph
    is built through it)."""
    from seals_al.dataset import index_over_u

    vectors, cluster = clustered_vectors(2_000, 16, 20, seed=7)
    ids = [f"r{n:05d}" for n in range(len(vectors))]
    rows = ["id,text,label,split"] + [
        f"{i},text of {i},{'hit' if c == 0 else f'c{c}'},{'test' if n % 5 == 0 else 'train'}"
        for n, (i, c) in enumerate(zip(ids, cluster.tolist(), strict=True))
    ]
    open_storage(root).write_text("items.csv", "\n".join(rows) + "\n")
    store = write_store(tmp_path / "built-store", ids, vectors, model="m", normalized=True, shard_rows=700)
    publish(store.path, f"{root}/store", STORE_FORMAT, progress=False)
    items, index = f"{root}/items.csv", f"{root}/index"
    index_over_u(
        items, f"{root}/store", index, "IVF16,Flat", split_column="split", search_params={"nprobe": 4}
    )
    return items, f"{root}/store", index


def _rounds(uri: str, caches, rounds: int = 3) -> dict[str, object]:
    """Run rounds of a campaign, each stage in its own cache (``caches()`` gives each one), the
    oracle answering in between; then every object of the campaign, timing fields aside."""
    import os

    from e2e.run import campaign_files
    from seals_al.campaign import Campaign
    from seals_al.labeltools.oracle import label_open_batch

    for _ in range(rounds):
        for stage in ("ingest", "train", "select"):
            os.environ["SEALS_CACHE_DIR"] = str(caches())
            getattr(Campaign(uri, progress=False), stage)()
        os.environ["SEALS_CACHE_DIR"] = str(caches())
        label_open_batch(Campaign(uri, progress=False))
    return campaign_files(uri)


def _warm(cache: Path, store: str, index: str) -> None:
    """A pod's disk holding the store, its prepared data and the index's graphs already."""
    for root, under in ((store, "prepared"), (index, "graphs")):
        for key in open_storage(root).list(under):
            if key.endswith(LISTING):
                materialize(f"{root}/{key.rsplit('/', 1)[0]}", "a published folder", cache, progress=False)
    materialize(store, "a store", cache, progress=False)


@pytest.mark.parametrize("strategy", ["maxent", "id"])  # id: the density comes with the records
def test_a_round_on_empty_caches_commits_what_a_warm_cache_and_local_disk_do(
    tmp_path, monkeypatch, gcs_emulator, strategy
):
    """The cluster path: a campaign on gs:// whose every stage runs on an empty cache (a new pod)
    reads the prepared data, the graph's records, the pool's and the examples' vectors by range,
    and commits round files identical to a copy whose stages share one warm cache; the same
    campaign on local disk picks the same batches."""
    from seals_al.campaign import CampaignConfig, init
    from seals_al.labeltools.oracle import seed_file_from_truth
    from seals_al.settings import DataConfig, RoundConfig

    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "setup"))
    root = f"gs://{BUCKET}/rounds/{uuid.uuid4().hex}"
    local = tmp_path / "local"
    local.mkdir()
    results = {}
    for where, data_root in (("gs", root), ("local", str(local))):
        items, store, index = _campaign_data(tmp_path / where, data_root)
        data = DataConfig(items, embeddings=store, index=index, truth_column="label", split_column="split")
        learning = RoundConfig(strategy=strategy, k=10, batch_size=12)
        config = CampaignConfig("hit", "", data, learning, budget=400)
        seeds = seed_file_from_truth(config)
        ways = {"cold": None, "warm": tmp_path / "warm"} if where == "gs" else {"local": tmp_path / "lc"}
        for way, warm in ways.items():
            uri = f"{root}/campaign-{way}" if where == "gs" else str(local / "campaign")
            init(config, uri, seeds)
            if way == "warm":  # after the cold campaign built and published the graph
                _warm(warm, store, index)
            fresh = iter(tmp_path / f"{way}-{n}" for n in range(1000))
            results[way] = _rounds(uri, (lambda warm=warm, fresh=fresh: warm or next(fresh)))
    cold, warm = results["cold"], results["warm"]
    assert differences(cold, warm) == [], "the empty caches committed other files"
    assert any(k.endswith("pool/vectors.npy") for k in cold), "the pool's vectors are saved with the round"
    # On local disk the graph is built in the cache (no records): the same batches, the same pools.
    for r in range(3):
        for name in ("to_label.jsonl", "pool/pool.npz"):
            key = f"rounds/{r:03d}/{name}"
            assert results["local"][key] == cold[key], key
    # Round 0's select built the graph (it copied the store and the index, and kept the graph it
    # published); every stage after it, each on an empty cache, copied nothing whole there.
    assert (tmp_path / "cold-2" / "published").is_dir()
    assert not any((tmp_path / f"cold-{n}" / "published").exists() for n in range(3, 12))


def test_prepared_data_is_published_once_and_opened_remotely_in_two_round_trips(
    tmp_path, monkeypatch, gcs_emulator
):
    """The first process over a data version prepares and publishes it beside the store; a process
    on another machine opens it with two batches of requests (the data's versions; the listing
    with the manifest and small arrays) and looks ids, texts and rows up by range as a local copy
    does."""
    from seals_al.dataset import Dataset
    from seals_al.settings import DataConfig

    root = f"gs://{BUCKET}/prepared/{uuid.uuid4().hex}"
    items, store, _ = _campaign_data(tmp_path, root)
    config = DataConfig(items, embeddings=store, truth_column="label", split_column="split")
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "first"))
    first = Dataset.prepare(config, progress=False)
    assert open_storage(store).exists(f"prepared/{first.prepared.key}/{LISTING}")
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "second"))
    monkeypatch.setattr(ranges, "_STATS", ranges.Stats())
    second = Dataset.prepare(config, progress=False)
    assert len(ranges.stats().batches) == 2, ranges.stats().batches
    assert isinstance(second.prepared.folder, RemoteFolder)
    assert not (tmp_path / "second").exists(), "nothing was downloaded to open it"
    asked = ["r00007", "r01999", "r00100"]
    rows = second.row_ids_of(asked)
    assert rows.tolist() == first.row_ids_of(asked).tolist() == [7, 1999, 100]
    assert second.ids_and_texts(rows, rows) == (asked, [f"text of {i}" for i in asked])
    np.testing.assert_array_equal(second.eval_vectors(), first.eval_vectors())
    np.testing.assert_array_equal(second.eval_rows, first.eval_rows)
    assert second.truth_of(asked, "hit") == first.truth_of(asked, "hit")
    with pytest.raises(SealsError, match="unknown id 'nope'"):
        second.row_ids_of(["nope"])


def test_a_campaign_over_a_gcs_npy_without_an_index_publishes_what_it_builds_under_itself(
    tmp_path, monkeypatch, gcs_emulator
):
    """Embeddings given as a .npy on gs:// and no built index: the first task imports the vectors,
    builds the neighbour graph from the factory and publishes store, prepared data and graph under
    the campaign's derived/; a task on another machine reads them there by range, importing and
    building nothing again."""
    from seals_al.campaign import Campaign, CampaignConfig, init
    from seals_al.labeltools.oracle import label_open_batch, seed_file_from_truth
    from seals_al.settings import DataConfig, RoundConfig

    root = f"gs://{BUCKET}/npy/{uuid.uuid4().hex}"
    vectors, cluster = clustered_vectors(1_500, 16, 15, seed=3)
    rows = ["id,label,split"] + [
        f"n{n},{'hit' if c == 0 else 'other'},{'test' if n % 5 == 0 else 'train'}"
        for n, c in enumerate(cluster)
    ]
    open_storage(root).write_text("items.csv", "\n".join(rows) + "\n")
    np.save(tmp_path / "vectors.npy", vectors)
    open_storage(root).upload(tmp_path / "vectors.npy", "vectors.npy")
    data = DataConfig(
        f"{root}/items.csv",
        embeddings=f"{root}/vectors.npy",
        truth_column="label",
        split_column="split",
        index_factory="IVF8,Flat",
    )
    config = CampaignConfig("hit", "", data, RoundConfig(k=8, batch_size=10), budget=300)
    uri = f"{root}/campaign"
    init(config, uri, seed_file_from_truth(config))
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "first-pod"))
    Campaign(uri, progress=False).round()
    derived = open_storage(f"{uri}/derived").list()
    for kind in ("stores", "prepared", "graphs"):
        assert any(k.startswith(f"{kind}/") and k.endswith(LISTING) for k in derived), kind
    label_open_batch(Campaign(uri, progress=False))
    monkeypatch.setenv("SEALS_CACHE_DIR", str(tmp_path / "second-pod"))
    record = Campaign(uri, progress=False).round()
    assert record["round"] == 1
    kept = sorted(p.name for p in (tmp_path / "second-pod").iterdir())
    assert kept == ["pools"], "nothing imported, built or downloaded whole; only the pool it saved"


def test_a_read_is_tried_again_after_a_busy_server_or_a_body_cut_short(monkeypatch):
    """A 503 and a response that stops midway are tried again (with back-off); a range that keeps
    failing is an error naming the object, never short data."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    data = bytes(range(256)) * 64
    answers = ["busy", "short", "whole"]  # then, once they are used up: always busy

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            answer = answers.pop(0) if answers else "busy"
            if answer == "busy":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = (int(v) for v in self.headers["Range"].removeprefix("bytes=").split("-"))
            body = data[first : last + 1]
            self.send_response(206)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if answer == "whole" else body[: len(body) // 2])
            if answer == "short":
                self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(ranges, "_back_off", lambda attempt: None)
    try:
        source = ranges.RemoteObject("bucket", "some/object", 7, len(data))
        assert source.read(100, 1000) == data[100:1100], "third time: the whole range"
        with pytest.raises(
            SealsError,
            match=r"gs://bucket/some/object: bytes 0..10 could not be read in 5 tries \(HTTP 503\)",
        ):
            source.read(0, 10)
        with pytest.raises(SealsError, match="outside its 16,384 bytes"):
            source.read(16_000, 1_000)
    finally:
        server.shutdown()


def test_a_large_file_is_published_in_parts_and_read_across_them(tmp_path, uri, monkeypatch):
    """A file over the part size is stored as parts (objects of bounded size: uploaded one by one,
    kept when republished unchanged); readers read ranges across parts, and a copy puts them
    together again, checked against the whole file's checksum."""
    from seals_al import published

    monkeypatch.setattr(published, "OBJECT_PART_BYTES", 100_000)
    arrays = arrays_folder(tmp_path)  # rows.npy is 640,128 bytes: 7 parts
    listing = publish(tmp_path / "folder", uri, "test", progress=False)
    assert len(listing["files"]["rows.npy"]["parts"]) == 7
    assert "parts" not in listing["files"]["manifest.json"], "a small file is one object"
    names = set(open_storage(uri).list())
    assert "rows.npy" not in names
    assert {f"rows.npy.part-{n:05d}" for n in range(7)} <= names
    rows = open_folder(uri, tmp_path / "cache").array("rows.npy")
    picks = np.asarray([0, 624, 625, 1250, 3999, 2000])  # rows on both sides of part boundaries
    np.testing.assert_array_equal(rows[picks], arrays["rows"][picks])
    np.testing.assert_array_equal(rows[:], arrays["rows"])
    copy = materialize(uri, "a test folder", tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(np.load(copy / "rows.npy"), arrays["rows"])
    again = publish(tmp_path / "folder", uri, "test", progress=False)
    assert again["files"]["rows.npy"]["parts"] == listing["files"]["rows.npy"]["parts"], "kept, not uploaded"
    np.save(tmp_path / "folder" / "rows.npy", arrays["rows"][:100])  # smaller: one object again
    publish(tmp_path / "folder", uri, "test", progress=False)
    names = set(open_storage(uri).list())
    assert "rows.npy" in names
    assert not any(".part-" in name and name.startswith("rows") for name in names), "old parts removed"


def test_parts_over_the_librarys_resumable_threshold_upload_and_read_back(tmp_path, uri, monkeypatch):
    """Parts of more than 8 MB go up as resumable uploads, which need the part as a stream of its
    own (they seek back to its start to retry)."""
    from seals_al import published

    monkeypatch.setattr(published, "OBJECT_PART_BYTES", 9_000_000)
    big = np.random.default_rng(5).normal(size=(2_600_000, 2)).astype(np.float32)  # 20.8 MB: 3 parts
    (tmp_path / "big").mkdir()
    np.save(tmp_path / "big" / "big.npy", big)
    listing = publish(tmp_path / "big", uri, "test", progress=False)
    assert [part["bytes"] for part in listing["files"]["big.npy"]["parts"]] == [
        9_000_000,
        9_000_000,
        2_800_128,
    ]
    remote = open_folder(uri, tmp_path / "cache").array("big.npy")
    picks = np.asarray([0, 1_124_983, 1_124_984, 2_599_999])  # around the first part's end
    np.testing.assert_array_equal(remote[picks], big[picks])
    np.testing.assert_array_equal(
        np.load(materialize(uri, "big", tmp_path / "cache", progress=False) / "big.npy"), big
    )
