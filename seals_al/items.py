"""The items: reading item tables (CSV, JSONL, Parquet) into columns of strings, with errors that
name the file, the line and the field; :class:`Items`, the validated columns a run needs; and the
seed set a simulation or simulated campaign draws from ground truth."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TextIO

import numpy as np

from seals_al.errors import SealsError, shown
from seals_al.settings import DataConfig
from seals_al.storage import local_file
from seals_al.storage.files import require_file
from seals_al.storage.uris import default_cache_dir, is_remote, local_path

Columns = dict[str, list[str]]

# The most characters in one cell, in every format: the csv module's default limit, which the CSV
# reader applies. The encoder reads the first few hundred tokens of a text; a longer cell is
# almost always a broken file, and a limit keeps one line from taking gigabytes.
MAX_CELL_CHARS = 131_072
MAX_JSONL_LINE_CHARS = 8 * MAX_CELL_CHARS


ITEM_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
WILDCARDS = "*?["


def item_files(uri: str) -> list[str]:
    """The item files that a ``data:`` (or ``items_uri``) names, local or gs://: a file; a folder,
    meaning its item files (.csv, .jsonl, .ndjson, .parquet) directly inside; or a glob such as
    ``items/*.csv``, whose ``*`` does not cross a ``/``. Sorted by name, so that files added later
    with later names (``2026-12-01.csv``) append their rows after the earlier ones'.

    Raises:
        SealsError: a folder or glob that names no item file.
    """
    from fnmatch import fnmatchcase

    from seals_al.storage import open_storage

    if any(c in uri for c in WILDCARDS):
        first = min(uri.index(c) for c in WILDCARDS if c in uri)
        root = uri[:first].rpartition("/")[0] or "."
        pattern = uri[len(root) + 1 :] if uri[:first].rpartition("/")[0] else uri
        depth = pattern.count("/")
        storage = open_storage(root)
        files = [
            storage.where(key)
            for key in storage.list()
            if key.count("/") == depth and fnmatchcase(key, pattern)
        ]
        if not files:
            raise SealsError(f"{uri}: no file matches")
        for file in files:
            if not file.lower().endswith(ITEM_SUFFIXES):
                raise SealsError(
                    f"{file}: matched by {uri} but not an item file ({', '.join(ITEM_SUFFIXES)})"
                )
        return files
    remote = is_remote(uri)
    folder = remote and (uri.endswith("/") or not _gcs_object_exists(uri))
    if folder or (not remote and local_path(uri).is_dir()):
        storage = open_storage(uri.rstrip("/"))
        files = [
            storage.where(key)
            for key in storage.list()
            if "/" not in key and key.lower().endswith(ITEM_SUFFIXES)
        ]
        if not files:
            raise SealsError(
                f"{uri}: no such item file, nor a folder with item files ({', '.join(ITEM_SUFFIXES)})"
            )
        return files
    if not uri.lower().endswith(ITEM_SUFFIXES):  # refused before any pipeline or round reads it
        raise SealsError(_unsupported(uri))
    return [uri]


def _unsupported(name: str) -> str:
    suffix = PurePosixPath(name).suffix or "(none)"
    return f"{name}: unsupported item file type {suffix!r} (use {', '.join(ITEM_SUFFIXES)})"


MAX_REMOVED_BYTES = 256 * 2**20  # a tombstone list of some 10M ids


def read_removed(uri: str, cache_dir: str | Path | None = None) -> frozenset[str]:
    """The ids of a tombstone list (the ``removed`` setting): items removed for retention or
    privacy. A UTF-8 text file, local or gs://, one id per line; blank lines and lines starting with
    ``#`` are skipped and each line is stripped. Read again on every call, since the list grows
    between rounds. An id that is not (or no longer) in the data is allowed: removing it from the
    data files as well is the usual end of a removal.

    Raises:
        SealsError: the file is missing, over :data:`MAX_REMOVED_BYTES`, or a line is not UTF-8
            (naming the file and the line).
    """
    path = local_file(uri, cache_dir or default_cache_dir())
    require_file(path, uri)
    size = path.stat().st_size
    if size > MAX_REMOVED_BYTES:
        raise SealsError(f"{uri}: {size:,} bytes, over a tombstone list's limit of {MAX_REMOVED_BYTES:,}")
    ids = set()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff").strip()
            except UnicodeDecodeError as e:
                raise SealsError(f"{uri}: line {number}: not UTF-8 text ({e.reason})") from None
            if line and not line.startswith("#"):
                ids.add(line)
    return frozenset(ids)


def _gcs_object_exists(uri: str) -> bool:
    from seals_al.storage import open_storage
    from seals_al.storage.uris import split_uri

    parent, name = split_uri(uri)
    return open_storage(parent).exists(name)


def read_items(path: str | Path, columns: Sequence[str], id_column: str) -> Columns:
    """Read the named columns of an item table, refusing it at its first unusable row.

    Args:
        path: a .csv, .jsonl (or .ndjson) or .parquet file.
        columns: the columns the caller needs; each must exist.
        id_column: the column holding the external string id; ids must be non-empty and unique.

    Returns:
        A mapping from column name to the column's values as strings, in file order.

    Raises:
        SealsError: the file is missing, empty or malformed, a column is missing, or an id is
            empty or repeated; the message names the file and, where there is one, the line.
    """
    path = Path(path)
    require_file(path)
    if path.stat().st_size == 0:
        raise SealsError(f"{path}: the file is empty")
    wanted = list(dict.fromkeys([id_column, *columns]))
    table: Columns = {c: [] for c in wanted}
    lists = list(table.values())
    unit = row_unit(path.name)
    with path.open("rb") as raw:
        for number, values, problem in item_rows(str(path), raw, wanted):
            if problem is not None:
                raise SealsError(f"{path}, {unit} {number}: {problem}")
            for column, value in zip(lists, values, strict=True):
                column.append(value)
    if not table[id_column]:
        raise SealsError(f"{path}: the file has a header but no rows")
    _check_ids(path, id_column, table[id_column])
    return table


ItemRow = tuple[int, list[str], None] | tuple[int, None, str]


def row_unit(name: str) -> str:
    """What the numbers :func:`item_rows` yields count in a file of this name: lines or rows."""
    return "row" if name.lower().endswith(".parquet") else "line"


def item_rows(name: str, raw: BinaryIO, wanted: Sequence[str]) -> Iterator[ItemRow]:
    """The one reader of item files, for a round (:func:`read_items`, which refuses a file at its
    first unusable row) and for the embedding pipeline (which sends such a row to its dead
    letters and goes on): both follow the same rules, so data one of them takes, the other does.

    Yields ``(number, values, None)`` for a usable row (the ``wanted`` columns' values as strings,
    in that order) and ``(number, None, problem)`` for one that is not (wrong field count, invalid
    JSON, a missing field or a null, a cell over :data:`MAX_CELL_CHARS`); ``number`` is the line
    (CSV, JSON lines) or the row from 0 (Parquet), as :func:`row_unit` says.

    Raises:
        SealsError: the file as a whole cannot be read on (its type, its encoding, a missing
            column, malformed CSV, a JSON line over :data:`MAX_JSONL_LINE_CHARS`), naming it.
    """
    lower = name.lower()
    if lower.endswith(".parquet"):
        yield from _parquet_rows(name, raw, wanted)
        return
    if not lower.endswith(ITEM_SUFFIXES):
        raise SealsError(_unsupported(name))
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="" if lower.endswith(".csv") else None)
    try:
        yield from (_csv_rows if lower.endswith(".csv") else _jsonl_rows)(name, text, wanted)
    except UnicodeDecodeError as e:
        raise SealsError(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from e


def _csv_rows(name: str, text: TextIO, wanted: Sequence[str]) -> Iterator[ItemRow]:
    reader = csv.reader(text, strict=True)  # a stray or unclosed quote is an error, not data
    try:
        header = next(reader, None)
        if not header:
            raise SealsError(f"{name}: the file is empty")
        _missing(name, wanted, header)
        at = [header.index(c) for c in wanted]
        for row in reader:
            if len(row) != len(header):
                yield reader.line_num, None, f"expected {len(header)} fields, found {len(row)}"
            else:
                yield reader.line_num, [row[i] for i in at], None
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise SealsError(
                f"{name}, line {reader.line_num}: a field over {MAX_CELL_CHARS:,} characters"
            ) from e
        raise SealsError(f"{name}, line {reader.line_num}: malformed CSV: {e}") from e


def _jsonl_rows(name: str, text: TextIO, wanted: Sequence[str]) -> Iterator[ItemRow]:
    # Each line read up to a limit, so one huge line is refused, not read whole.
    lines = iter(lambda: text.readline(MAX_JSONL_LINE_CHARS + 1), "")
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_JSONL_LINE_CHARS:
            raise SealsError(f"{name}, line {number}: over {MAX_JSONL_LINE_CHARS:,} characters")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, None, f"invalid JSON: {e.msg}"
            continue
        if not isinstance(record, dict):
            yield number, None, "expected a JSON object"
            continue
        missing = next((c for c in wanted if record.get(c) is None), None)
        if missing is not None:
            yield number, None, f"missing field {missing!r}"
            continue
        yield number, *_cells([str(record[c]) for c in wanted], wanted)


def _parquet_rows(name: str, raw: BinaryIO, wanted: Sequence[str]) -> Iterator[ItemRow]:
    import pyarrow.parquet as pq

    source = raw if raw.seekable() else io.BytesIO(raw.read())
    try:
        _missing(name, wanted, pq.read_schema(source).names)
        source.seek(0)
        arrow = pq.read_table(source, columns=list(wanted))
    except (OSError, ValueError) as e:
        raise SealsError(f"{name}: cannot read Parquet: {e}") from e
    columns = [arrow.column(c).to_pylist() for c in wanted]
    for number, row in enumerate(zip(*columns, strict=True)):
        null = next((c for c, v in zip(wanted, row, strict=True) if v is None), None)
        if null is not None:
            yield number, None, f"null in column {null!r}"
        else:
            yield number, *_cells([str(v) for v in row], wanted)


def _cells(values: list[str], wanted: Sequence[str]) -> tuple[list[str], None] | tuple[None, str]:
    """The row's values, or the problem of its first cell over :data:`MAX_CELL_CHARS`."""
    for value, column in zip(values, wanted, strict=True):
        if len(value) > MAX_CELL_CHARS:
            return None, f"{column!r} is over {MAX_CELL_CHARS:,} characters"
    return values, None


def has_column(path: str | Path, column: str) -> bool:
    """Whether an item table has a column (the CSV header, the Parquet schema, or the first
    JSON line's keys); for optional columns such as the text beside precomputed embeddings."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                return column in (next(csv.reader(f), None) or [])
        if suffix in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8-sig") as f:
                first = next((line for line in f if line.strip()), "")
            record = json.loads(first) if first else {}
            return isinstance(record, dict) and column in record
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return column in pq.read_schema(path).names
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError, ValueError):
        return False  # read_items reports the real problem with the file
    return False


def _missing(name: str, wanted: Sequence[str], present: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise SealsError(
            f"{name}: missing column(s) {', '.join(map(repr, missing))}; "
            f"the file has {', '.join(map(repr, present))}"
        )


def _check_ids(path: Path, id_column: str, ids: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for row, item_id in enumerate(ids, start=1):
        if not item_id.strip():
            raise SealsError(f"{path}, data row {row}: empty {id_column!r}")
        if item_id in seen:
            raise SealsError(
                f"{path}, data row {row}: duplicate {id_column!r} {shown(item_id)} "
                f"(first at data row {seen[item_id]})"
            )
        seen[item_id] = row


def _read_all(paths: Sequence[Path], columns: Sequence[str], id_column: str) -> Columns:
    """Several item files as one table, in order; an id in two files is an error naming both."""
    if len(paths) == 1:
        return read_items(paths[0], columns, id_column)
    table: Columns = {}
    first: dict[str, tuple[Path, int]] = {}
    for path in paths:
        part = read_items(path, columns, id_column)
        for row, item_id in enumerate(part[id_column], start=1):
            if item_id in first:
                where, at = first[item_id]
                raise SealsError(
                    f"{path}, data row {row}: {id_column!r} {shown(item_id)} is also in {where} (data row "
                    f"{at}); an id names one item across every file"
                )
            first[item_id] = (path, row)
        for c, values in part.items():
            table.setdefault(c, []).extend(values)
    return table


@dataclass(frozen=True)
class Items:
    """The item table's columns that a run needs, in file order, validated before any embedding
    work: ids, texts (for labelers and the encoder), ground truth (if any) and the evaluation
    split. U is every item outside the evaluation split."""

    source: str
    ids: list[str]
    texts: list[str] | None
    truth: np.ndarray | None  # the truth column's value per item (object array of str), if any
    is_eval: np.ndarray  # bool per item
    truth_column: str | None
    eval_split: str

    @classmethod
    def load(cls, config: DataConfig) -> Items:
        """Read the columns ``config`` names; texts are read when they will be embedded, or when
        they are there beside given embeddings (for labelers)."""
        columns = [c for c in (config.truth_column, config.split_column) if c]
        cache = config.cache_dir or default_cache_dir()
        paths = [local_file(uri, cache) for uri in item_files(config.data)]
        with_texts = config.embeddings is None or has_column(paths[0], config.text_column)
        if with_texts:
            columns.append(config.text_column)
        table = _read_all(paths, columns, config.id_column)
        is_eval = np.zeros(len(table[config.id_column]), dtype=bool)
        if config.split_column:
            split = np.asarray(table[config.split_column], dtype=object)
            is_eval = split == config.eval_split
            if not is_eval.any():
                found = ", ".join(sorted(set(split.tolist()))[:10])
                raise SealsError(
                    f"{config.data}: no rows with {config.split_column}={config.eval_split!r} to evaluate on "
                    f"(found: {found})"
                )
            if is_eval.all():
                raise SealsError(
                    f"{config.data}: every row is in the evaluation split; nothing to select from"
                )
        texts = table[config.text_column] if with_texts else None
        truth = np.asarray(table[config.truth_column], dtype=object) if config.truth_column else None
        return cls(
            config.data,
            table[config.id_column],
            texts,
            truth,
            is_eval,
            config.truth_column,
            config.eval_split,
        )

    def check_concept(self, concept: str) -> None:
        """A concept with spaces around it, or one the truth column never names (when there is
        one: it drives the metrics and the oracle), is a mistake to stop at, not a campaign or a
        simulation whose every metric is zero."""
        if concept != concept.strip() or not concept:
            raise SealsError(f"concept {shown(concept)}: has spaces around it (or is empty)")
        if self.truth is not None and not (self.truth == concept).any():
            known = sorted(set(self.truth.tolist()))
            some = ", ".join(map(repr, known[:8])) + (
                f", ... ({len(known)} in all)" if len(known) > 8 else ""
            )
            raise SealsError(
                f"{self.source}: concept {shown(concept)} is never in the truth column "
                f"{self.truth_column!r}; known: {some}"
            )

    def u_ids(self) -> set[str]:
        """The ids of U: every item outside the evaluation split."""
        return {i for i, e in zip(self.ids, self.is_eval, strict=True) if not e}

    def text_of(self) -> dict[str, str]:
        """id -> text ("" for every item when the table has no text column)."""
        return dict(zip(self.ids, self.texts or [""] * len(self.ids), strict=True))

    def truth_of(self, ids: Iterable[str], concept: str) -> list[int]:
        """1 where the truth column equals the concept, else 0, for the given ids."""
        if self.truth is None:
            raise SealsError(f"{self.source}: no ground-truth column")
        at = {item: n for n, item in enumerate(self.ids)}
        return [int(self.truth[at[i]] == concept) for i in ids]


def draw_seeds(
    items: Items, concept: str, positives: int, negatives: int, seed: int
) -> list[tuple[str, int]]:
    """A seed set drawn from ground truth: ``positives`` items of U with the concept, then
    ``negatives`` without, each a seeded draw without replacement (the paper's 5 + 95). A
    simulation and a simulated campaign with the same seed draw the same seeds.

    Returns:
        (id, label) pairs, positives first.
    """
    if items.truth is None:
        raise SealsError(f"{items.source}: seeds from ground truth need a truth column")
    in_u = ~items.is_eval
    rng = np.random.default_rng(seed)
    chosen = []
    for want, mask, name in (
        (positives, in_u & (items.truth == concept), "positives"),
        (negatives, in_u & (items.truth != concept), "negatives"),
    ):
        where = np.flatnonzero(mask)
        if len(where) < want:
            raise SealsError(
                f"{items.source}: concept {shown(concept)} has {len(where)} {name} in U; "
                f"the seed set needs {want}"
            )
        chosen += [(items.ids[i], int(name == "positives")) for i in rng.choice(where, want, replace=False)]
    return chosen
