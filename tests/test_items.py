"""Item tables on their own: every format read into columns, every bad table a SealsError that
names the file and the line, row or field, and no cell or line read past its limit."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seals_al.errors import SealsError
from seals_al.items import MAX_CELL_CHARS, MAX_JSONL_LINE_CHARS, Items, has_column, item_files, read_items
from seals_al.settings import DataConfig
from seals_al.storage import open_storage

from .conftest import BUCKET

ROWS = [{"id": "a", "text": "first"}, {"id": "b", "text": "second, with a comma"}]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        lines = ["id,text", *(f'{r["id"]},"{r["text"]}"' for r in rows)]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_reads_the_same_columns(tmp_path, suffix):
    table = read_items(write(tmp_path / f"items{suffix}", ROWS), ["text"], "id")
    assert table == {"id": ["a", "b"], "text": ["first", "second, with a comma"]}


@pytest.mark.parametrize(
    ("suffix", "where"),
    [
        (".csv", "line 3: a field over"),
        (".jsonl", "line 2: 'text' is over"),
        (".parquet", "row 1: 'text' is over"),
    ],
)
@pytest.mark.hostile
def test_a_cell_over_the_limit_is_refused_naming_where(tmp_path, suffix, where):
    rows = [ROWS[0], {"id": "b", "text": "x" * (MAX_CELL_CHARS + 1)}]
    path = write(tmp_path / f"items{suffix}", rows)
    with pytest.raises(SealsError) as e:
        read_items(path, ["text"], "id")
    assert str(e.value).startswith(f"{path}, {where}")
    assert f"{MAX_CELL_CHARS:,} characters" in str(e.value)
    rows[1]["text"] = "x" * MAX_CELL_CHARS  # at the limit: read
    assert read_items(write(path, rows), ["text"], "id")["text"][1] == rows[1]["text"]


@pytest.mark.hostile
def test_one_huge_jsonl_line_is_refused_without_being_read_whole(tmp_path):
    """A 64 MB line (one unterminated value, say) is refused after its first characters: the
    reader's memory stays a small multiple of the line limit, not of the line."""
    path = tmp_path / "items.jsonl"
    with path.open("w") as f:
        f.write(json.dumps(ROWS[0]) + "\n")
        f.write('{"id": "b", "text": "' + "x" * (64 * 2**20))
    tracemalloc.start()
    try:
        with pytest.raises(SealsError) as e:
            read_items(path, ["text"], "id")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == f"{path}, line 2: over {MAX_JSONL_LINE_CHARS:,} characters"
    assert peak < 16 * MAX_JSONL_LINE_CHARS


@pytest.mark.hostile
def test_malformed_csv_names_its_line(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('id,text\na,fine\nb,"an open quote\n')
    with pytest.raises(SealsError, match=r"items\.csv, line 3: malformed CSV: unexpected end of data"):
        read_items(path, ["text"], "id")


def test_read_items_csv_jsonl_parquet(tmp_path):
    rows = [{"id": "a", "text": "hello, world", "label": "x"}, {"id": "b", "text": "bye", "label": "y"}]
    csv_path = tmp_path / "items.csv"
    csv_path.write_text('id,text,label\na,"hello, world",x\nb,bye,y\n')
    jsonl_path = tmp_path / "items.jsonl"
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet_path = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet_path)
    for path in (csv_path, jsonl_path, parquet_path):
        table = read_items(path, ["text", "label"], "id")
        assert table == {"id": ["a", "b"], "text": ["hello, world", "bye"], "label": ["x", "y"]}, path.name
    # The same files as some tools write them, starting with a UTF-8 byte order mark.
    for path in (csv_path, jsonl_path):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        assert has_column(path, "label"), path.name
        assert read_items(path, ["text", "label"], "id")["id"] == ["a", "b"], path.name


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "id,text,label\n", "has a header but no rows"),
        ("nolabel.csv", "id,text\na,hi\n", "missing column(s) 'label'; the file has 'id', 'text'"),
        ("short.csv", "id,text,label\na,hi,x\nb,oops\n", "line 3: expected 3 fields, found 2"),
        (
            "dup.csv",
            "id,text,label\na,hi,x\na,ho,y\n",
            "data row 2: duplicate 'id' 'a' (first at data row 1)",
        ),
        ("blank.csv", "id,text,label\n ,hi,x\n", "data row 1: empty 'id'"),
        ("bad.jsonl", '{"id": "a", "text": "t", "label": "x"}\n{"id": "b", \n', "line 2: invalid JSON"),
        ("field.jsonl", '{"id": "a", "text": "t"}\n', "line 1: missing field 'label'"),
        ("items.txt", "whatever", "unsupported item file type '.txt'"),
    ],
)
@pytest.mark.hostile
def test_read_items_errors_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SealsError) as error:
        read_items(path, ["text", "label"], "id")
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


@pytest.mark.hostile
def test_read_items_rejects_bad_encoding(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,text,label\na,caf\xe9,x\n".encode("latin-1"))
    with pytest.raises(SealsError, match="not valid UTF-8"):
        read_items(path, ["text", "label"], "id")


def test_data_may_be_a_folder_or_a_glob_of_item_files(tmp_path, monkeypatch):
    folder = tmp_path / "items"
    folder.mkdir()
    write(folder / "2026-12-02.jsonl", [{"id": "c", "text": "third"}])
    write(folder / "2026-12-01.csv", ROWS)
    (folder / "README.md").write_text("not items")
    (folder / "old").mkdir()
    write(folder / "old" / "x.csv", [{"id": "z", "text": "in a subfolder"}])
    by_name = [str(folder / "2026-12-01.csv"), str(folder / "2026-12-02.jsonl")]
    assert item_files(str(folder)) == by_name, "item files directly inside, by name"
    assert item_files(f"{folder}/*.csv") == by_name[:1]
    assert item_files(f"{folder}/*/x.csv") == [str(folder / "old" / "x.csv")], "* stops at /"
    with pytest.raises(SealsError, match=r"README.md: matched by .*/\*\.\* but not an item file"):
        item_files(f"{folder}/*.*")
    monkeypatch.chdir(tmp_path)
    assert item_files("items/2026-*") == by_name, "relative to the working directory"
    assert item_files(str(folder / "2026-12-01.csv")) == by_name[:1], "a file is itself"
    with pytest.raises(SealsError, match=r"items/\*\.parquet: no file matches"):
        item_files("items/*.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SealsError, match="empty: no such item file, nor a folder with item files"):
        item_files(str(tmp_path / "empty"))

    items = Items.load(DataConfig(data=str(folder)))
    assert items.ids == ["a", "b", "c"], "the files' rows in the files' order"
    assert items.texts == ["first", "second, with a comma", "third"]


def test_an_id_in_two_item_files_is_an_error_naming_both(tmp_path):
    write(tmp_path / "a.csv", ROWS)
    write(tmp_path / "b.jsonl", [{"id": "new", "text": "x"}, {"id": "b", "text": "again"}])
    with pytest.raises(SealsError) as e:
        Items.load(DataConfig(data=str(tmp_path)))
    assert str(e.value) == (
        f"{tmp_path / 'b.jsonl'}, data row 2: 'id' 'b' is also in {tmp_path / 'a.csv'} (data row 2); "
        "an id names one item across every file"
    )


def test_item_files_on_gcs(gcs_emulator):
    prefix = f"gs://{BUCKET}/items-{uuid.uuid4().hex}"
    storage = open_storage(prefix)
    storage.write_text("b.csv", "id,text\nb,x\n")
    storage.write_text("a.csv", "id,text\na,y\n")
    storage.write_text("notes.txt", "no")
    assert item_files(prefix) == [f"{prefix}/a.csv", f"{prefix}/b.csv"]
    assert item_files(f"{prefix}/") == [f"{prefix}/a.csv", f"{prefix}/b.csv"]
    assert item_files(f"{prefix}/b*") == [f"{prefix}/b.csv"]
    assert item_files(f"{prefix}/a.csv") == [f"{prefix}/a.csv"]
    assert Items.load(DataConfig(data=f"{prefix}/*.csv")).ids == ["a", "b"]
