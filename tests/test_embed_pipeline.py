"""The Beam embedding pipeline: TestPipeline + assert_that with the real model, dead letters,
and a whole run on the in-process runner."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from seals_al.embed.handlers import MiniLMHandler
from seals_al.embed.pipeline import ensure_embeddings, main, run
from seals_al.embed.transforms import DEAD, EmbedItems, ReadItems
from seals_al.encoder import MiniLMEncoder
from seals_al.errors import SealsError
from seals_al.items import read_items
from seals_al.store import EmbeddingStore

TEXTS = {
    "a": "how do i report a stolen card",
    "b": "set a timer for ten minutes",
    "c": "transfer $50 to my savings account",
}


def local_options() -> PipelineOptions:
    return PipelineOptions(["--runner=FnApiRunner"])


def close_to(expected: dict[str, np.ndarray]):
    def check(actual):
        got = dict(actual)
        assert sorted(got) == sorted(expected)
        for key, vector in got.items():
            np.testing.assert_allclose(vector, expected[key], atol=1e-5)

    return check


def test_embeddings_of_a_clinc150_slice_equal_the_models_own_encode(clinc_slice):
    import csv

    with clinc_slice.open(newline="") as f:
        rows = [(r["id"], r["text"]) for r in csv.DictReader(f)][:40]
    expected = dict(zip([i for i, _ in rows], MiniLMEncoder().encode([t for _, t in rows]), strict=True))
    with BeamTestPipeline(options=local_options()) as p:
        out = p | beam.Create(rows) | EmbedItems(MiniLMHandler(min_batch_size=8, max_batch_size=16))
        assert_that(out["embedded"], close_to(expected), label="vectors")
        assert_that(out[DEAD], equal_to([]), label="no dead letters")


class FailsOnBoom(MiniLMHandler):
    """The real model, except that a batch holding "BOOM" raises, as a bad input would."""

    def run_inference(self, batch, model, inference_args=None):
        if "BOOM" in batch:
            raise ValueError("cannot embed BOOM")
        return super().run_inference(batch, model, inference_args)


def test_inference_failures_become_dead_letters_not_a_failed_job():
    with BeamTestPipeline(options=local_options()) as p:
        pairs = p | beam.Create([("a", TEXTS["a"]), ("x", "BOOM")])
        out = pairs | EmbedItems(FailsOnBoom(min_batch_size=1, max_batch_size=1))
        assert_that(out["embedded"] | beam.Keys(), equal_to(["a"]), label="embedded")
        assert_that(
            out[DEAD] | beam.Map(lambda d: (d["id"], d["reason"])),
            equal_to([("x", "ValueError('cannot embed BOOM')")]),
            label="dead",
        )


def test_parse_items_sends_bad_rows_to_the_dead_letters(tmp_path):
    path = tmp_path / "items.csv"
    # With a UTF-8 byte order mark, as some tools write CSV: it is not part of the "id" header.
    path.write_bytes(b"\xef\xbb\xbf" + b'id,text\na,"hello, world"\nb,\n,orphan text\nc,"two\nlines"\n')
    with BeamTestPipeline(options=local_options()) as p:
        parsed = p | ReadItems(str(path))
        assert_that(parsed.items, equal_to([("a", "hello, world"), ("c", "two\nlines")]), label="items")
        assert_that(
            parsed[DEAD] | beam.Map(lambda d: (d["id"], d["where"].split(", ")[-1], d["reason"])),
            equal_to([("b", "line 3", "empty 'text'"), (None, "line 4", "missing 'id'")]),
            label="dead",
        )


@pytest.mark.parametrize(
    "workers",
    [[], ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]],
    ids=["one-worker", "two-workers"],
)
def test_whole_run_writes_a_store_with_stable_row_ids(tmp_path, workers):
    """The same store from one in-process worker or two (FnApiRunner's direct_num_workers)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-1.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in list(TEXTS.items())[:2])
        + '{"id": "e", "text": ""}\n'
    )
    (tmp_path / "in" / "part-2.csv").write_text(f"id,text\nc,{TEXTS['c']}\n")
    manifest = run(
        [f"--input={tmp_path / 'in'}/*", f"--output={tmp_path / 'store'}", "--shard_rows=2", *workers]
    )
    store = EmbeddingStore.open(tmp_path / "store")
    assert manifest == store.manifest
    assert store.manifest["extra"] == {
        "embedded": 3,
        "dead_letter": 1,
        "dead_letter_reasons": {"empty 'text'": 1},
    }
    assert sorted(store.ids) == ["a", "b", "c"]
    assert store.row_ids_of(["a", "b", "c"]).tolist() == [0, 1, 2], "row id = rank of the id"
    expected = MiniLMEncoder().encode(list(TEXTS.values()))
    np.testing.assert_allclose(store.vectors(store.row_ids_of(list(TEXTS))), expected, atol=1e-5)
    dead = [json.loads(x) for x in (tmp_path / "store" / "dead_letter.jsonl").read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in dead] == [("e", "empty 'text'")]
    assert not (tmp_path / "store.parts").exists(), "the workers' parts are removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "store"]


def test_ensure_embeddings_reuses_a_store_made_from_the_same_items(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text(f"id,text\na,{TEXTS['a']}\nb,{TEXTS['b']}\n")
    out = str(tmp_path / "store")
    first, reused = ensure_embeddings(str(items), out)
    assert not reused
    assert first["extra"]["source"]["sha256"] == hashlib.sha256(items.read_bytes()).hexdigest()
    published = (tmp_path / "store" / "manifest.json").stat().st_mtime_ns
    again, reused = ensure_embeddings(str(items), out)
    assert reused, "same file, columns and model: nothing recomputed"
    assert (tmp_path / "store" / "manifest.json").stat().st_mtime_ns == published
    assert again == first
    assert sorted(EmbeddingStore.open(out).ids) == ["a", "b"]
    items.write_text(f"id,text\na,{TEXTS['a']}\nc,{TEXTS['c']}\n")
    changed, reused = ensure_embeddings(str(items), out)
    assert not reused, "the items changed: embedded again"
    assert changed != first
    assert sorted(EmbeddingStore.open(out).ids) == ["a", "c"]


def test_a_folder_of_item_files_is_embedded_and_a_new_file_appended(tmp_path):
    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "1.csv").write_text(f"id,text\na,{TEXTS['a']}\n")
    (folder / "2.jsonl").write_text(json.dumps({"id": "b", "text": TEXTS["b"]}) + "\n")
    (folder / "notes.txt").write_text("not an item file")
    out = str(tmp_path / "store")
    assert not ensure_embeddings(str(folder), out)[1]
    assert sorted(EmbeddingStore.open(out).ids) == ["a", "b"]
    assert ensure_embeddings(str(folder), out)[1], "the same files: reused"
    assert ensure_embeddings(f"{folder}/[12].*", out)[0]["count"] == 2
    with pytest.raises(SealsError, match=r"notes.txt: matched by .*/\* but not an item file"):
        ensure_embeddings(f"{folder}/*", out)
    (folder / "3.csv").write_text(f"id,text\nc,{TEXTS['c']}\n")
    assert not ensure_embeddings(str(folder), out)[1], "a new file: its items embedded"
    assert sorted(EmbeddingStore.open(out).ids) == ["a", "b", "c"]


def test_unknown_options_are_an_error_not_silently_dropped(tmp_path):
    with pytest.raises(SealsError, match="unknown option"):
        run([f"--input={tmp_path}/*.csv", f"--output={tmp_path / 'o'}", "--colour=blue"])
    assert not Path(tmp_path / "o").exists()


@pytest.mark.hostile
def test_workers_in_containers_are_refused_items_on_this_disk(tmp_path):
    (tmp_path / "items.csv").write_text("id,text\na,hello\n")
    external = ["--environment_type=EXTERNAL", "--environment_config=127.0.0.1:50000"]
    with pytest.raises(SealsError, match=r"EXTERNAL: the items, .*items.csv, is on this machine's disk"):
        run([f"--input={tmp_path}/items.csv", f"--output={tmp_path / 'o'}", *external])
    assert not Path(tmp_path / "o").exists()


def test_input_and_output_are_required(capsys):
    with pytest.raises(SealsError, match="missing required option"):
        run(["--input=x.csv"])
    # `python -m seals_al.embed.pipeline` answers as the CLI does: one line, exit code 2.
    assert main(["--input=x.csv"]) == 2
    assert capsys.readouterr().err == "error: missing required option(s): --output\n"


def test_embed_command(tmp_path, capsys):
    from seals_al.cli import main

    (tmp_path / "items.csv").write_text("id,text\n" + "".join(f"{k},{v}\n" for k, v in TEXTS.items()))
    assert main(["embed", f"--input={tmp_path / 'items.csv'}", f"--output={tmp_path / 's'}"]) == 0
    assert "3 embedded, 0 dead-lettered" in capsys.readouterr().out
    assert (
        main(["embed", f"--input={tmp_path / 'items.csv'}", f"--output={tmp_path / 't'}", "--colour=x"]) == 2
    )
    assert "unknown option(s): --colour" in capsys.readouterr().err


def write_images(folder: Path) -> dict[str, Path]:
    """Small generated images (two reds, a blue, a checkerboard) and one file that is not an image."""
    from PIL import Image

    folder.mkdir()
    checker = np.kron([[1, 0] * 4, [0, 1] * 4] * 4, np.ones((8, 8)))[:, :, None] * np.array([255, 255, 255])
    images = {
        "red": Image.new("RGB", (64, 48), (255, 0, 0)),
        "red2": Image.new("RGB", (40, 40), (240, 16, 8)),
        "blue": Image.new("RGB", (64, 64), (0, 0, 255)),
        "checker": Image.fromarray(checker.astype(np.uint8)),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    paths["broken"] = folder / "broken.png"
    paths["broken"].write_bytes(b"this is not an image")
    return paths


def test_image_pipeline_with_a_dead_letter_for_an_unreadable_image(tmp_path):
    from seals_al.embed.handlers import EfficientNetLiteHandler
    from seals_al.encoder import image_features, preprocess_image

    paths = write_images(tmp_path / "images")
    (tmp_path / "items.csv").write_text("id,uri\n" + "".join(f"{k},{v}\n" for k, v in paths.items()))
    run(
        [
            f"--input={tmp_path / 'items.csv'}",
            f"--output={tmp_path / 'store'}",
            "--modality=image",
            "--text_column=uri",
        ]
    )
    store = EmbeddingStore.open(tmp_path / "store")
    assert store.dim == 1280
    assert store.model == "efficientnet-lite0"
    assert sorted(store.ids) == ["blue", "checker", "red", "red2"]
    dead = [json.loads(x) for x in (tmp_path / "store" / "dead_letter.jsonl").read_text().splitlines()]
    assert [d["id"] for d in dead] == ["broken"]
    assert dead[0]["reason"].startswith("cannot read image: UnidentifiedImageError")
    names = ["red", "red2", "blue", "checker"]
    model = EfficientNetLiteHandler().load_model()
    expected = image_features(model, np.stack([preprocess_image(paths[n].read_bytes()) for n in names]))
    got = store.vectors(store.row_ids_of(names))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    sims = got @ got.T
    assert sims[0, 1] > sims[0, 2], "two reds are closer than red and blue: the features are real"


def test_invalid_json_lines_are_dead_letters_with_their_reason(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "text": "hello"}\n{"id": "b", "text": \n')
    with BeamTestPipeline(options=local_options()) as p:
        parsed = p | ReadItems(str(path))
        assert_that(parsed.items, equal_to([("a", "hello")]), label="items")
        assert_that(
            parsed[DEAD] | beam.Map(lambda d: (d["where"].split(", ")[-1], d["reason"].split(":")[0])),
            equal_to([("line 2", "invalid JSON")]),
            label="dead",
        )


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_items_that_only_grow_are_embedded_once_and_appended_to_the_published_store(tmp_path, where, request):
    """The pipelines' embed step over a folder that grows: only the new file's items go through
    the model; the store published at the same place keeps its rows (and, on gs://, its shard
    objects, not uploaded again) and gains the new ones after them."""
    from seals_al.storage import open_storage

    from .conftest import storage_root

    root = storage_root(where, request, tmp_path)
    items, out = open_storage(f"{root}/items"), f"{root}/store"
    items.write_text("1.csv", f"id,text\na,{TEXTS['a']}\nb,{TEXTS['b']}\n")
    first, _ = ensure_embeddings(f"{root}/items", out)
    from seals_al.published import materialize

    first_ids = EmbeddingStore.open(materialize(out, "a store")).ids
    shard = open_storage(out).version("shard-00000.npy")
    items.write_text("2.csv", f"id,text\nc,{TEXTS['c']}\n")
    grown, reused = ensure_embeddings(f"{root}/items", out)
    assert not reused
    extra = grown["extra"]
    assert (extra["embedded"], extra["appended"], extra["base_count"]) == (1, 1, 2), "only c embedded"
    assert (
        extra["appended_to"]
        == hashlib.sha256(",".join(s["sha256"] for s in first["shards"]).encode()).hexdigest()
    )
    assert open_storage(out).version("shard-00000.npy") == shard, "the old shard is not written again"
    store = EmbeddingStore.open(materialize(out, "a store"))
    rows = dict(zip(store.ids, store.row_ids.tolist(), strict=True))
    assert rows == {"a": 0, "b": 1, "c": 2}, "old rows keep their row ids; the new one follows"
    assert store.ids[:2] == first_ids, "the old rows first, as they were"
    np.testing.assert_allclose(
        store.vectors(np.arange(3)), MiniLMEncoder().encode([TEXTS[i] for i in "abc"]), atol=1e-5
    )
    # An id of the store in a new file as well is an error naming both files.
    items.write_text("3.csv", f"id,text\na,{TEXTS['a']}\n")
    with pytest.raises(SealsError, match=r"3.csv: id 'a' is also in .*1.csv"):
        ensure_embeddings(f"{root}/items", out)
    items.delete("3.csv")
    # Items left: embedded whole, not appended.
    items.write_text("1.csv", f"id,text\na,{TEXTS['a']}\n")
    whole, _ = ensure_embeddings(f"{root}/items", out)
    assert "appended_to" not in whole["extra"]
    assert whole["count"] == 2


READER_CASES = {
    # name: (contents, the line read_items refuses the file at, and why; None: it takes the file)
    "fine.csv": ('id,text\na,"hello, world"\nb,"two\nlines"\n', None),
    "fine.jsonl": ('{"id": "a", "text": "hello"}\n\n{"id": 7, "text": "seven"}\n', None),
    "short.csv": ("id,text\na,hello\nb\nc,bye\n", ("line 3", "expected 2 fields, found 1")),
    "long.csv": ("id,text\na,hello,extra\n", ("line 2", "expected 2 fields, found 3")),
    "null.jsonl": (
        '{"id": "a", "text": "hello"}\n{"id": "b", "text": null}\n',
        ("line 2", "missing field 'text'"),
    ),
    "list.jsonl": ('["a", "hello"]\n', ("line 1", "expected a JSON object")),
    "quote.csv": ('id,text\na,hello\nb,say "hi"\n', None),
    "notext.csv": ("id,label\na,x\n", ("", "missing column(s) 'text'")),
    "lines.json": ('{"id": "a", "text": "hello"}\n', ("", "unsupported item file type '.json'")),
}


@pytest.mark.hostile
@pytest.mark.parametrize("name", sorted(READER_CASES))
def test_a_round_and_the_embedding_pipeline_read_an_item_file_by_the_same_rules(tmp_path, name):
    """The Beam reader (a lenient DictReader, also taking .json) and the round's (strict CSV,
    .jsonl) followed different rules, so data embedded on the cluster could be refused by the
    round, or the reverse. One reader now: a file the round takes, the pipeline embeds whole; a
    row the round refuses the file at is a dead letter naming the same line and reason; a file
    the round cannot read at all is one dead letter saying why."""
    contents, refused = READER_CASES[name]
    path = tmp_path / name
    path.write_text(contents)
    try:
        table = read_items(path, ["text"], "id")
        verdict = None
    except SealsError as e:
        table, verdict = None, str(e).removeprefix(str(path)).lstrip(", ")
    if refused is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert verdict.startswith(refused[0])
        assert refused[1] in verdict
    if refused is not None and refused[1].startswith("unsupported item file type"):
        with pytest.raises(SealsError, match=re.escape(refused[1])):  # refused before any pipeline
            ReadItems(str(path))
        return
    with BeamTestPipeline(options=local_options()) as p:
        parsed = p | ReadItems(str(path))
        if table is not None:
            pairs = list(zip(table["id"], table["text"], strict=True))
            assert_that(parsed.items, equal_to(pairs), label="items")
            assert_that(parsed[DEAD], equal_to([]), label="no dead letters")
        else:
            letters = parsed[DEAD] | beam.Map(
                lambda d: d["where"].removeprefix(str(path)).lstrip(", ") + ": " + d["reason"]
            )
            where, why = refused

            def names_the_same_problem(found: list[str]) -> None:
                assert any(f.startswith(where) and why in f for f in found), found

            assert_that(letters, names_the_same_problem, label="dead")


@pytest.mark.hostile
def test_a_refused_item_file_is_one_line_on_stderr_and_exit_2(tmp_path):
    """Beam's import warned about its BigQuery client libraries on every run, so even a clean
    rejection was two lines on stderr; the command's own line is all there is now."""
    items = tmp_path / "items.json"
    items.write_text('{"id": "a", "text": "hello"}\n')
    run = subprocess.run(
        [sys.executable, "-c", "from seals_al.cli import main; raise SystemExit(main())", "embed",
         f"--input={items}", f"--output={tmp_path / 'store'}"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 2
    expected = f"error: {items}: unsupported item file type '.json' (use .csv, .jsonl, .ndjson, .parquet)"
    assert run.stderr.splitlines() == [expected]
    assert not (tmp_path / "store").exists()
