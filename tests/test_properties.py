"""Property-based tests (Hypothesis) of every parser and validator of user input: label files in
each format, campaign configs, item tables, storage keys and URIs. Valid inputs parse to what
they say; random and mutated ones either parse or raise the project's own error, never anything
else. Runs are derandomized (tests/conftest.py), so a failure reproduces."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seals_al.campaign.config import CampaignConfig
from seals_al.errors import SealsError
from seals_al.items import read_items
from seals_al.labelformats.answers import NEGATIVE, POSITIVE, LabelFileError, parse_label
from seals_al.labelformats.files import check_label_file
from seals_al.storage import open_storage
from seals_al.storage.base import check_key

pytestmark = pytest.mark.hostile
T = TypeVar("T")

CONCEPT = "report_fraud"
OPEN = [f"item-{i}" for i in range(12)]
KNOWN = [*OPEN, "outside-0", "outside-1", "held-out-0"]
U = [i for i in KNOWN if not i.startswith("held-out")]
SPELLINGS = {
    1: [*sorted(POSITIVE), CONCEPT, CONCEPT.upper()],
    0: [*sorted(NEGATIVE), f"not {CONCEPT}", f"NOT_{CONCEPT.upper()}"],
}
NAMES = ["l.csv", "l.jsonl", "l.json"]
tmp_dirs = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def outcome(call: Callable[[], T]) -> tuple[T | None, SealsError | None]:
    """(the result, None), or (None, the project's error); any other exception fails the test."""
    try:
        return call(), None
    except SealsError as e:
        return None, e


def check(name: str, data: bytes, labeled: dict[str, int] | None = None):
    return check_label_file(
        name, data, CONCEPT, open_batch=set(OPEN), labeled=labeled or {}, known=set(KNOWN), in_u=set(U)
    )


def render(name: str, rows: list[tuple[str, str]]) -> bytes:
    """A label file of (id, label as written) rows, in the format its name says."""
    if name.endswith(".csv"):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerows([("id", "label"), *rows])
        return out.getvalue().encode()
    if name.endswith(".jsonl"):
        return "".join(json.dumps({"id": i, "label": v}) + "\n" for i, v in rows).encode()
    tasks = [
        {
            "data": {"seals_id": i},
            "annotations": [{"result": [{"type": "choices", "value": {"choices": [v]}}]}],
        }
        for i, v in rows
    ]
    return json.dumps(tasks).encode()


answers = st.dictionaries(st.sampled_from(OPEN), st.sampled_from([0, 1]), min_size=1)


@given(name=st.sampled_from(NAMES), labels=answers, data=st.data())
def test_a_valid_label_file_parses_to_its_labels(name, labels, data):
    rows = [(i, data.draw(st.sampled_from(SPELLINGS[v]))) for i, v in labels.items()]
    result = check(name, render(name, rows))
    assert result.new == labels
    assert result.relabels == {}


@given(name=st.sampled_from(NAMES), labels=answers, earlier=answers)
def test_labels_for_labeled_ids_are_relabels_or_unchanged_never_new(name, labels, earlier):
    rows = [(i, str(v)) for i, v in labels.items()]
    result = check(name, render(name, rows), labeled=earlier)
    assert set(result.new) == set(labels) - set(earlier)
    changed = {i: (earlier[i], v) for i, v in labels.items() if i in earlier and earlier[i] != v}
    assert result.relabels == changed
    assert result.unchanged == sum(1 for i, v in labels.items() if earlier.get(i) == v)


def parses_or_rejects(name: str, data: bytes) -> None:
    """The property: a result, or LabelFileError naming the file with every problem placed."""
    result, error = outcome(lambda: check(name, data))
    if error is None:
        assert set(result.new) <= set(OPEN)
        return
    assert isinstance(error, LabelFileError)
    assert error.problems
    assert all(p.where and p.message for p in error.problems)
    assert all(len(p.message) < 400 for p in error.problems), "echoed input is cut short"
    assert str(error).startswith(name)


@given(name=st.sampled_from(NAMES), data=st.binary(max_size=400))
def test_random_bytes_are_a_result_or_a_rejection(name, data):
    parses_or_rejects(name, data)


@given(name=st.sampled_from(NAMES), text=st.text(max_size=300))
def test_random_text_is_a_result_or_a_rejection(name, text):
    parses_or_rejects(name, text.encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(records=st.lists(json_values, max_size=6))
def test_jsonl_records_of_any_json_shape(records):
    parses_or_rejects("l.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())


@given(export=json_values)
def test_label_studio_exports_of_any_json_shape(export):
    parses_or_rejects("l.json", json.dumps(export).encode())


@given(
    name=st.sampled_from(NAMES),
    labels=answers,
    cut=st.integers(min_value=0, max_value=10_000),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
)
def test_mutated_valid_files_are_a_result_or_a_rejection(name, labels, cut, flips):
    """Valid files cut short and with bytes overwritten: the mutations a broken upload or a
    careless edit makes."""
    data = bytearray(render(name, [(i, str(v)) for i, v in labels.items()]))
    for at, byte in flips:
        data[at % len(data)] = byte
    parses_or_rejects(name, bytes(data[: len(data) - cut % len(data)]))


@given(value=st.text(max_size=30))
def test_a_label_value_is_one_zero_or_none(value):
    assert parse_label(value, CONCEPT) in (0, 1, None)


# -- storage keys and URIs -----------------------------------------------------------------------
@given(key=st.text(max_size=300))
def test_a_key_is_accepted_as_is_or_refused(key):
    result, error = outcome(lambda: check_key(key, "root"))
    if error is not None:
        assert str(error).startswith("root: key ")
        assert len(str(error)) < 300
        return
    assert result == key
    parts = key.split("/")
    assert all(part and not part.startswith(".") for part in parts)
    assert all(ord(c) >= 32 and ord(c) != 127 for c in key)
    assert "\\" not in key


@given(rest=st.text(max_size=80))
def test_a_gs_uri_is_a_storage_or_a_refusal_before_any_network_call(rest, gcs_emulator):
    storage, error = outcome(lambda: open_storage("gs://" + rest))
    assert str(error).startswith("gs://") if error else storage.uri.startswith("gs://")


# -- campaign configs ----------------------------------------------------------------------------
SETTINGS = {
    "concept": st.text(max_size=12),
    "data": st.text(max_size=12),
    "seed_labels": st.text(max_size=12),
    "strategy": st.sampled_from(["maxent", "mlp", "id", "random", "nope"]),
    "mode": st.sampled_from(["seals", "global", "both"]),
    "k": st.integers(-3, 200) | st.booleans() | st.floats() | st.text(max_size=4),
    "batch_size": st.integers(-3, 200) | st.booleans() | st.floats() | st.none(),
    "budget": st.integers(-3, 10_000) | st.booleans() | st.text(max_size=4),
    "seed": st.integers(-(2**70), 2**70) | st.booleans(),
    "C": st.floats() | st.integers(-2, 5) | st.text(max_size=4),
    "knn_graph": st.booleans() | st.integers(0, 2) | st.text(max_size=4),
    "index_factory": st.text(max_size=20) | st.integers(),
    "unknown_setting": st.integers(),
}


@tmp_dirs
@given(config=st.fixed_dictionaries({}, optional=SETTINGS))
def test_a_campaign_config_is_read_or_refused_naming_the_file(config, tmp_path):
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(config))
    read, error = outcome(lambda: CampaignConfig.from_yaml(path))
    if error is not None:
        assert str(error).startswith(str(path))
        assert len(str(error)) < 2000
        return
    assert read.concept == config["concept"]
    for name in ("k", "batch_size", "budget"):
        if name in config:
            value = getattr(read.learning if name != "budget" else read, name)
            assert value == config[name]
            assert type(value) is int, "a boolean or a float is not taken for an integer"


@tmp_dirs
@given(text=st.text(max_size=400))
def test_any_yaml_text_is_a_config_or_a_refusal(text, tmp_path):
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    _, error = outcome(lambda: CampaignConfig.from_yaml(path))
    assert error is None or str(error).startswith(str(path))


# -- item tables ---------------------------------------------------------------------------------
cells = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


@tmp_dirs
@given(rows=st.lists(st.tuples(cells, cells), min_size=1, max_size=8, unique_by=lambda r: r[0]))
def test_a_valid_item_table_reads_back_its_rows(rows, tmp_path):
    assume(all(item_id.strip() for item_id, _ in rows))
    path = tmp_path / "items.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("id", "text"), *rows])
    table = read_items(path, ["text"], "id")
    assert table == {"id": [r[0] for r in rows], "text": [r[1] for r in rows]}


@tmp_dirs
@given(suffix=st.sampled_from([".csv", ".jsonl"]), data=st.binary(max_size=400))
def test_random_item_tables_are_read_or_refused_naming_the_file(suffix, data, tmp_path):
    path = Path(tmp_path) / f"items{suffix}"
    path.write_bytes(data)
    table, error = outcome(lambda: read_items(path, ["text"], "id"))
    if error is not None:
        assert str(error).startswith(str(path))
    else:
        assert len(table["id"]) == len(table["text"]) == len(set(table["id"]))


# -- the exported-model reader ----------------------------------------------------------------------
def _model_document() -> dict:
    return {
        "format": "seals-model/1",
        "classifier": {"kind": "logistic", "coef": [0.5, -0.25, 1.0], "intercept": -0.1},
        "embedding": {"model": "m", "dim": 3},
        "concept": CONCEPT,
        "round": 2,
        "labeled": 120,
        "positives": 9,
        "thresholds": [{"precision": 0.9, "threshold": 0.8}, {"precision": 0.99, "threshold": None}],
    }


@given(
    path=st.sampled_from(
        [
            ("classifier",),
            ("classifier", "coef"),
            ("classifier", "intercept"),
            ("embedding",),
            ("embedding", "dim"),
            ("concept",),
            ("round",),
            ("labeled",),
            ("thresholds",),
            ("format",),
        ]
    ),
    value=json_values | st.floats(),
)
def test_an_exported_model_with_any_field_changed_is_read_or_refused(path, value):
    """A tampered model file (a field of any JSON type, NaN, infinities) is read or refused with the
    project's error, never a traceback; what is read predicts finite probabilities."""
    from seals_al.export import FORMAT, ExportedModel

    document = _model_document()
    document["format"] = FORMAT
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        model = ExportedModel.from_json(json.loads(json.dumps(document)), "model.json")
    except SealsError:
        return
    import numpy as np

    proba = model.predict_proba(np.ones((2, len(model.classifier.coef)), np.float32))
    assert np.isfinite(proba).all()
