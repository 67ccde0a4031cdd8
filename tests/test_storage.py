"""Storage: atomic local writes, and the same contract on a local folder and on GCS (a real
gcp-storage-emulator server on 127.0.0.1 with the real google-cloud-storage client)."""

from __future__ import annotations

import os
import re
import stat
import uuid

import pytest

from seals_al.errors import SealsError
from seals_al.storage import check_output_file, open_storage
from seals_al.storage.base import AlreadyExistsError, ChangedError
from seals_al.storage.files import atomic_path, write_json_atomic, write_text_atomic
from seals_al.storage.gcs import GCSStorage
from seals_al.storage.local import LocalStorage
from seals_al.storage.uris import split_uri

from .conftest import BUCKET


def crash_mid_write(target):
    with atomic_path(target) as tmp:
        tmp.write_text('{"round": 2, "half')
        raise RuntimeError("crash")


@pytest.mark.hostile
def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"round": 1})
    with pytest.raises(RuntimeError, match="crash"):
        crash_mid_write(target)
    assert target.read_text() == '{\n  "round": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new"


def test_files_written_get_the_mode_the_umask_allows_not_0600(tmp_path):
    """Atomic writes go through mkstemp, which makes files 0600: campaign files were unreadable to
    the rest of a team sharing a disk, under umask 022."""
    from seals_al.storage.local import LocalStorage

    mask = os.umask(0)
    os.umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x")
    storage = LocalStorage(tmp_path / "c")
    storage.write_text("rounds/000/metrics.json", "{}")
    storage.create("LOCK", b"{}")
    for path in (tmp_path / "a.txt", tmp_path / "c" / "rounds/000/metrics.json", tmp_path / "c" / "LOCK"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(tmp_path / "campaign")
    request.getfixturevalue("gcs_emulator")
    return open_storage(f"gs://{BUCKET}/campaigns/{uuid.uuid4().hex}")


def test_compare_and_swap_follows_each_version(storage):
    """read_versioned, replace_if and delete_if (what the campaign lease is built on): a write or
    delete succeeds against the version it read, and only that one."""
    storage.write_bytes("LOCK", b"first", once=True)
    data, first = storage.read_versioned("LOCK")
    assert data == b"first"
    second = storage.replace_if("LOCK", b"second", first)
    assert second != first
    assert storage.read_versioned("LOCK") == (b"second", second)
    third = storage.replace_if("LOCK", b"third", second)
    storage.delete_if("LOCK", third)
    assert not storage.exists("LOCK")
    assert storage.list() == [], "no helper file shows among the keys"


@pytest.mark.hostile
def test_a_stale_version_is_refused_on_a_local_disk(tmp_path):
    """(Local only: the GCS emulator ignores preconditions; GCS itself checks if_generation_match.)"""
    storage = LocalStorage(tmp_path)
    storage.write_bytes("LOCK", b"a", once=True)
    _, old = storage.read_versioned("LOCK")
    new = storage.replace_if("LOCK", b"b", old)
    for stale in (lambda: storage.replace_if("LOCK", b"c", old), lambda: storage.delete_if("LOCK", old)):
        with pytest.raises(ChangedError, match="LOCK: changed since it was read"):
            stale()
    assert storage.read_versioned("LOCK") == (b"b", new)


def test_round_trip_list_and_exists(storage):
    storage.write_text("rounds/000/to_label.jsonl", '{"id": "a"}\n')
    storage.write_json("config.json", {"concept": "report_fraud"})
    storage.write_bytes("rounds/001/labels.csv", b"id,label\na,1\n")
    assert storage.read_text("rounds/000/to_label.jsonl") == '{"id": "a"}\n'
    assert storage.read_json("config.json") == {"concept": "report_fraud"}
    assert storage.exists("rounds/001/labels.csv")
    assert not storage.exists("rounds/002/labels.csv")
    assert storage.list() == ["config.json", "rounds/000/to_label.jsonl", "rounds/001/labels.csv"]
    assert storage.list("rounds") == ["rounds/000/to_label.jsonl", "rounds/001/labels.csv"]
    assert storage.list("rounds/001") == ["rounds/001/labels.csv"]
    assert storage.list("nothing/here") == []
    storage.write_text("config.json", "{}")  # an ordinary write replaces
    assert storage.read_json("config.json") == {}


@pytest.mark.hostile
def test_missing_too_big_and_bad_encoding_name_the_object(storage):
    with pytest.raises(SealsError, match=r"rounds/009/labels\.csv: no such (file|object)"):
        storage.read_bytes("rounds/009/labels.csv")
    storage.write_bytes("big.csv", b"x" * 2000)
    with pytest.raises(SealsError, match=r"big\.csv: 2,000 bytes, over the limit of 1,000"):
        storage.read_bytes("big.csv", max_bytes=1000)
    assert len(storage.read_bytes("big.csv", max_bytes=2000)) == 2000
    storage.write_bytes("latin1.csv", "caf\xe9".encode("latin-1"))
    with pytest.raises(SealsError, match=r"latin1\.csv: not valid UTF-8"):
        storage.read_text("latin1.csv")
    storage.write_text("broken.json", '{"a": 1,\n')
    with pytest.raises(SealsError, match=r"broken\.json, line 2: invalid JSON"):
        storage.read_json("broken.json")


@pytest.mark.parametrize(
    "key",
    [
        "../outside.json",
        "/etc/passwd",
        "rounds/../../x",
        "a//b",
        "",
        "a\\b",
        ".hidden",
        "rounds/./x",
        "a\x07b",
        "a\nb",
    ],
)
@pytest.mark.hostile
def test_keys_cannot_leave_the_campaign(storage, key):
    with pytest.raises(SealsError, match="is not a plain relative path inside the campaign"):
        storage.write_text(key, "x")
    with pytest.raises(SealsError, match="is not a plain relative path inside the campaign"):
        storage.read_bytes(key)


def test_keys_every_backend_can_store(storage):
    """A name over 255 bytes (what file systems allow) or a key over 900 bytes (GCS allows 1,024
    with the prefix) is refused by name, shortened, before anything is written."""
    for key in ("inbox/000/" + "n" * 256 + ".csv", "/".join(["d" * 200] * 5)):
        with pytest.raises(
            SealsError, match=r"\.\.\.' is too long \(at most 255 bytes a name, 900 in all\)$"
        ):
            storage.write_text(key, "x")
    storage.write_text("inbox/000/" + "n" * 251 + ".csv", "x")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://bucket-1/../x", "key '../x' is not a plain relative path"),
        ("gs://Bucket_1/x", "'Bucket_1' is not a GCS bucket name"),
        ("gs://b/x", "'b' is not a GCS bucket name"),
        ("gs://bucket-1/a/./b", "key 'a/./b' is not a plain relative path"),
    ],
)
@pytest.mark.hostile
def test_bad_gs_uris_fail_at_once_before_any_network_call(uri, message, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    with pytest.raises(SealsError, match=re.escape(f"{uri}: {message}")):
        open_storage(uri)


@pytest.mark.hostile
def test_missing_google_cloud_credentials_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(SealsError, match=r"^gs://: no Google Cloud credentials found"):
        open_storage("gs://bucket-1/campaigns/x")


@pytest.mark.hostile
def test_a_folder_is_named_a_folder_not_a_missing_file(tmp_path):
    from seals_al.campaign import CampaignConfig
    from seals_al.items import read_items

    storage = LocalStorage(tmp_path / "c")
    storage.write_text("inbox/000/l.csv", "id,label\n")
    with pytest.raises(SealsError, match=r"c/inbox/000: is a folder, not a file$"):
        storage.read_bytes("inbox/000")
    with pytest.raises(SealsError, match=r"c/inbox: is a folder, not a file$"):
        read_items(tmp_path / "c" / "inbox", ["text"], "id")
    with pytest.raises(SealsError, match=r"c: is a folder, not a file$"):
        CampaignConfig.from_yaml(tmp_path / "c")
    with pytest.raises(SealsError, match=r"nothing\.yaml: no such file$"):
        CampaignConfig.from_yaml(tmp_path / "nothing.yaml")


@pytest.mark.hostile
def test_write_once_on_a_local_folder(tmp_path):
    storage = LocalStorage(tmp_path / "c")
    storage.write_text("rounds/000/done", "ok", once=True)
    with pytest.raises(AlreadyExistsError, match=r"rounds/000/done: already written"):
        storage.write_text("rounds/000/done", "again", once=True)
    assert storage.read_text("rounds/000/done") == "ok"
    assert sorted(p.name for p in (tmp_path / "c" / "rounds" / "000").iterdir()) == ["done"]


@pytest.mark.hostile
def test_local_symlink_out_of_the_campaign_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tmp_path / "campaign"
    root.mkdir()
    (root / "link").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(SealsError, match="leads outside the campaign"):
        storage.read_text("link/secret.txt")


def test_an_output_file_on_gcs_inside_a_campaign_or_not_ours_is_refused(gcs_emulator):
    root = f"gs://{BUCKET}/out/{uuid.uuid4().hex}"
    campaign = f"{root}/campaign"
    with pytest.raises(SealsError, match="inside the campaign"):
        check_output_file(f"{campaign}/rounds/000/labeled.jsonl", campaign, "model", lambda data: True)
    beside = f"{root}/campaign-2/model.json"  # a name that starts like the campaign's: outside it
    assert check_output_file(beside, campaign, "model", lambda data: False) == beside
    open_storage(f"{root}/campaign-2").write_text("model.json", "someone else's")
    with pytest.raises(SealsError, match="exists and is not a model seals-al wrote"):
        check_output_file(beside, campaign, "model", lambda data: data.startswith(b"{"))
    assert check_output_file(beside, campaign, "model", lambda data: data == b"someone else's") == beside
    with pytest.raises(SealsError, match="unsupported URI scheme"):
        split_uri("s3://bucket/model.json")


def test_open_storage_schemes(tmp_path, gcs_emulator):
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    gcs = open_storage(f"gs://{BUCKET}/a/b/")
    assert isinstance(gcs, GCSStorage)
    assert gcs.uri == f"gs://{BUCKET}/a/b"
    with pytest.raises(SealsError, match="unsupported URI scheme"):
        open_storage("s3://bucket/prefix")
    with pytest.raises(SealsError, match="expected gs://bucket/prefix"):
        open_storage("gs:///prefix")


@pytest.mark.hostile
def test_one_place_tells_local_from_object_storage_and_refuses_other_schemes(tmp_path):
    """s3:// and http:// were taken as local folders named s3: and http: in places that sniffed
    gs:// themselves; is_remote and local_path are the one place now."""
    from seals_al.storage import local_file
    from seals_al.storage.uris import is_remote, local_path

    assert is_remote("gs://b/p") is True
    assert is_remote(tmp_path) is False
    assert local_path(f"file://{tmp_path}") == tmp_path
    assert local_path(str(tmp_path)) == tmp_path
    for uri in ("s3://b/p", "http://host/x", "ftp://h/f"):
        with pytest.raises(SealsError, match=f"{uri}: unsupported URI scheme"):
            is_remote(uri)
        with pytest.raises(SealsError, match="unsupported URI scheme"):
            local_path(uri)
    with pytest.raises(SealsError, match="on object storage, not a path on this machine"):
        local_path("gs://b/p")
    with pytest.raises(SealsError, match=r"s3://b/seeds\.csv: unsupported URI scheme"):
        local_file("s3://b/seeds.csv", tmp_path)  # was read as a local path "s3:/b/seeds.csv"
