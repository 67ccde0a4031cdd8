"""Label files on their own: every format, every label spelling, every rejection with its line."""

from __future__ import annotations

import json

import pytest

from seals_al.labelformats.answers import MAX_PROBLEMS, LabelFileError, parse_label
from seals_al.labelformats.files import MAX_LABEL_FILE_BYTES, check_label_file, read_label_file
from seals_al.labelformats.labeled_set import labels_by_annotator

CONCEPT = "report_fraud"
OPEN = {"a", "b", "c"}
KNOWN = OPEN | {"d", "e"}


def check(name: str, text: str | bytes, labeled: dict[str, int] | None = None):
    data = text.encode() if isinstance(text, str) else text
    return check_label_file(name, data, CONCEPT, open_batch=OPEN, labeled=labeled or {}, known=KNOWN)


def problems(name: str, text: str | bytes, labeled: dict[str, int] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(LabelFileError) as e:
        check(name, text, labeled)
    assert e.value.detail.startswith("rejected, nothing ingested: ")
    return [(p.where, p.message) for p in e.value.problems]


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("1", 1), ("yes", 1), (" True ", 1), ("Y", 1), ("positive", 1), ("pos", 1), ("REPORT_FRAUD", 1),
        ("0", 0), ("no", 0), ("false", 0), ("N", 0), ("negative", 0), ("neg", 0),
        ("not report_fraud", 0), ("Not_Report_Fraud", 0),
        ("2", None), ("maybe", None), ("", None), ("report", None), ("not fraud", None),
    ],
)  # fmt: skip
def test_label_spellings(value, label):
    assert parse_label(value, CONCEPT) == label


def test_csv_jsonl_and_label_studio_give_the_same_answers():
    csv_file = "id,label\na,1\nb,no\n"
    jsonl = '{"id": "a", "label": 1}\n{"id": "b", "label": "not report_fraud"}\n'
    studio = json.dumps(
        [
            {
                "data": {"seals_id": "a"},
                "annotations": [{"result": [{"type": "choices", "value": {"choices": [CONCEPT]}}]}],
            },
            {
                "data": {"seals_id": "b"},
                "annotations": [{"result": [{"type": "choices", "value": {"choices": ["0"]}}]}],
            },
        ]
    )
    for name, text, fmt in (
        ("l.csv", csv_file, "csv"),
        ("l.jsonl", jsonl, "jsonl"),
        ("l.json", studio, "label-studio"),
    ):
        result = check(name, text)
        assert result.format == fmt
        assert result.new == {"a": 1, "b": 0}, name


def test_csv_columns_in_any_order_with_extra_columns_and_blank_lines():
    result = check("l.csv", "note,label,id\nhello,1,a\n\n,0,b\n")
    assert result.new == {"a": 1, "b": 0}


@pytest.mark.hostile
def test_every_problem_is_reported_with_its_line():
    found = problems("l.csv", "id,label\na,1\n,1\nb,maybe\nc,1,extra\nzzz,0\nd,1\n")
    assert found == [
        ("line 3", "missing id"),
        ("line 4", "invalid label 'maybe' for id 'b'"),
        ("line 5", "expected 2 fields, found 3"),
        ("line 6", "id 'zzz' is not an item of this campaign"),
        ("line 7", "id 'd' is not in the open batch"),
    ]


@pytest.mark.hostile
def test_an_evaluation_item_is_named_held_out_not_missing_from_the_batch():
    """Ids outside U (the evaluation split) are told apart from ids merely outside the open batch,
    for a seed file (whose open batch is U) and for a round's labels alike."""
    u = KNOWN - {"e"}
    for open_batch in (OPEN, u):
        with pytest.raises(LabelFileError) as e:
            check_label_file(
                "l.csv", b"id,label\ne,1\n", CONCEPT, open_batch=open_batch, labeled={}, known=KNOWN, in_u=u
            )
        assert [(p.where, p.message) for p in e.value.problems] == [
            ("line 2", "id 'e' is in the evaluation split, held out from labeling")
        ]


@pytest.mark.hostile
def test_a_file_of_many_bad_lines_keeps_the_first_problems_and_counts_the_rest():
    lines = "".join(f"x{i},maybe\n" for i in range(MAX_PROBLEMS + 500))
    with pytest.raises(LabelFileError) as e:
        check("l.csv", "id,label\n" + lines)
    assert e.value.total == MAX_PROBLEMS + 500
    assert len(e.value.problems) == MAX_PROBLEMS
    assert e.value.problems[-1].where == f"line {MAX_PROBLEMS + 1}"
    assert e.value.detail.endswith(f"(and {MAX_PROBLEMS + 497:,} more)")


@pytest.mark.hostile
def test_csv_without_the_columns_is_rejected_at_line_1():
    assert problems("l.csv", "item,answer\na,1\n") == [
        ("line 1", "expected columns id,label; found 'item,answer'")
    ]


@pytest.mark.hostile
def test_jsonl_problems():
    text = '{"id": "a", "label": 1}\nnot json\n["a", 1]\n{"id": "b"}\n{"id": "c", "lab'
    assert problems("l.jsonl", text) == [
        ("line 2", "invalid JSON: Expecting value"),
        ("line 3", 'expected an object with "id" and "label"'),
        ("line 4", 'expected an object with "id" and "label"'),
        ("line 5", "truncated (no end of line)"),
    ]


@pytest.mark.hostile
def test_a_repeated_column_or_json_key_is_rejected_not_taken_silently():
    assert problems("l.csv", "id,label,label\na,1,0\n") == [
        ("line 1", "column(s) 'label' appear more than once")
    ]
    assert problems("l.jsonl", '{"id": "a", "label": 1, "label": 0}\n') == [
        ("line 1", "key 'label' appears more than once in the object")
    ]
    export = '[{"id": 1, "data": {"seals_id": "a", "seals_id": "b"}, "annotations": []}]'
    assert problems("l.json", export) == [("file", "key 'seals_id' appears more than once in an object")]


@pytest.mark.hostile
def test_one_file_that_labels_an_id_twice_differently_is_rejected():
    assert problems("l.csv", "id,label\na,1\na,0\n") == [("line 3", "id 'a' labeled 1 at line 2 and 0 here")]
    assert check("l.csv", "id,label\na,1\na,yes\n").new == {"a": 1}, "the same answer twice is fine"


def test_relabels_and_unchanged_labels_are_counted_never_silent():
    result = check("l.csv", "id,label\nd,0\ne,1\na,1\n", labeled={"d": 1, "e": 1})
    assert result.new == {"a": 1}
    assert result.relabels == {"d": (1, 0)}
    assert result.unchanged == 1
    assert result.report()["relabels"] == [{"id": "d", "old": 1, "new": 0}]


def test_label_studio_takes_the_majority_of_annotations_not_cancelled():
    def task(item: str, *annotations: tuple[str, bool]) -> dict:
        return {
            "data": {"seals_id": item},
            "annotations": [
                {"was_cancelled": cancelled, "result": [{"type": "choices", "value": {"choices": [choice]}}]}
                for choice, cancelled in annotations
            ],
        }

    tasks = [
        task("a", ("1", False), ("0", False)),  # a tie
        task("b", ("1", False), ("0", True)),  # the cancelled one has no vote
        task("c", ("1", True)),  # skipped only
        task("d", (CONCEPT, False), ("0", False), (CONCEPT, False)),
        task("e", (f"not {CONCEPT}", False)),
    ]
    result = check("l.json", json.dumps(tasks), labeled={"d": 0, "e": 0})
    assert (result.new, result.relabels, result.unchanged) == ({"b": 1}, {"d": (0, 1)}, 1)
    assert result.pending_tasks == 2, "a tie and a task whose only annotation was cancelled stay out"


def test_each_answer_keeps_who_gave_it_how_and_when():
    """Provenance: a file's annotator and labeled_at columns (CSV) or keys (JSONL); from a Label
    Studio export, the task, each vote's annotation and annotator, the latest vote's time and the
    share of votes that chose the label. Two people giving one item the same label are both kept."""
    result = check(
        "l.csv", "id,label,annotator,labeled_at\na,1,ann@x,2026-12-01\nb,0,,\na,1,bob@x,2026-12-02\n"
    )
    assert result.provenance() == {
        "a": {"by": ["ann@x", "bob@x"], "agreement": 1.0, "labeled_at": "2026-12-02"}
    }
    result = check("l.jsonl", '{"id": "a", "label": 1, "annotator": "ann@x"}\n{"id": "b", "label": 0}\n')
    assert result.provenance() == {"a": {"by": ["ann@x"]}}
    vote = {"type": "choices", "value": {"choices": [CONCEPT]}}
    against = {"type": "choices", "value": {"choices": [f"not {CONCEPT}"]}}
    task = {
        "id": 7,
        "data": {"seals_id": "a"},
        "annotations": [
            {"id": 70, "completed_by": 3, "updated_at": "2026-12-01T10:00:00Z", "result": [vote]},
            {
                "id": 71,
                "completed_by": {"id": 4, "email": "eve@x"},
                "updated_at": "2026-12-01T11:00:00Z",
                "result": [vote],
            },
            {"id": 72, "completed_by": 5, "created_at": "2026-12-01T09:00:00Z", "result": [against]},
            {"id": 73, "completed_by": 6, "was_cancelled": True, "result": []},
        ],
    }
    assert check("l.json", json.dumps([task])).provenance() == {
        "a": {
            "tool": "label-studio",
            "task": 7,
            "annotations": [70, 71, 72],
            "by": ["label-studio user 3", "eve@x", "label-studio user 5"],
            "agreement": 0.6667,
            "labeled_at": "2026-12-01T11:00:00Z",
        }
    }
    assert labels_by_annotator(
        [{"label": 1, "by": ["ann@x", "bob@x"]}, {"label": 0, "by": ["ann@x"]}, {"label": 1}]
    ) == [("ann@x", 2, 1), ("(no annotator named)", 1, 1), ("bob@x", 1, 1)]


@pytest.mark.hostile
def test_an_annotator_that_is_not_a_string_names_the_line():
    assert problems("l.jsonl", '{"id": "a", "label": 1, "annotator": 3}\n') == [
        ("line 1", "'annotator' is a string, not a int")
    ]


@pytest.mark.hostile
def test_label_studio_problems():
    two_choices = {
        "data": {"seals_id": "a"},
        "annotations": [{"result": [{"type": "choices", "value": {"choices": ["1", "0"]}}]}],
    }
    assert problems("l.json", json.dumps([two_choices, "task", {"data": 3}])) == [
        (
            "task 1 (seals_id 'a')",
            f"an annotation has no single choice; expected {CONCEPT!r} or 'not {CONCEPT}'",
        ),
        ("task 2", 'expected a task object with "data"'),
        ("task 3", 'expected a task object with "data"'),
    ]
    assert problems("l.json", '{"tasks": []}') == [
        ("file", "expected a Label Studio export: a JSON list of tasks")
    ]
    assert problems("l.json", "[\n{") == [
        ("line 2", "invalid JSON: Expecting property name enclosed in double quotes")
    ]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("l.csv", b"", ("file", "empty")),
        ("l.csv", b"id,label\n\xff,1\n", ("byte 9", "not valid UTF-8 (invalid start byte)")),
        (
            "l.txt",
            b"a 1\n",
            ("file", "unsupported label file type (use .csv, .jsonl or a Label Studio .json)"),
        ),
        ("l.csv", b"id,label\n", ("file", "no labels in the file")),
    ],
)
@pytest.mark.hostile
def test_files_that_hold_no_labels(name, data, expected):
    assert problems(name, data) == [expected]


@pytest.mark.hostile
def test_an_oversized_file_is_rejected_before_it_is_parsed():
    data = b"id,label\n" + b"a,1\n" * (MAX_LABEL_FILE_BYTES // 4)
    assert problems("l.csv", data) == [
        ("file", f"{len(data):,} bytes, over the limit of {MAX_LABEL_FILE_BYTES:,}")
    ]


def test_read_label_file_counts_pending_label_studio_tasks():
    fmt, answers, pending, found = read_label_file("l.json", b'[{"data": {"seals_id": "a"}}]', CONCEPT)
    assert (fmt, answers, pending, list(found)) == ("label-studio", [], 1, [])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("l.csv", "id,label\na,1\n"),
        ("l.jsonl", '{"id": "a", "label": 1}\n'),
        (
            "l.json",
            json.dumps(
                [
                    {
                        "data": {"seals_id": "a"},
                        "annotations": [{"result": [{"type": "choices", "value": {"choices": ["1"]}}]}],
                    }
                ]
            ),
        ),
    ],
)
@pytest.mark.hostile
def test_a_byte_order_mark_is_not_part_of_the_file(name, text):
    """Excel and some exporters start UTF-8 files with a BOM; it must not hide the 'id' column."""
    assert check(name, b"\xef\xbb\xbf" + text.encode()).new == {"a": 1}


def _mutations(value, replacements):
    """Every copy of a JSON value with one of its parts (or itself) replaced by each replacement."""
    yield from replacements
    if isinstance(value, dict):
        for key, inner in value.items():
            for changed in _mutations(inner, replacements):
                yield {**value, key: changed}
    elif isinstance(value, list):
        for at, inner in enumerate(value):
            for changed in _mutations(inner, replacements):
                yield [*value[:at], changed, *value[at + 1 :]]


WRONG_TYPES = [None, True, 0, 1.5, "", "x", [], [1], {}, {"a": 1}]


@pytest.mark.hostile
def test_label_studio_exports_of_any_shape_are_parsed_or_rejected_never_a_crash():
    task = {
        "data": {"seals_id": "a", "text": "t"},
        "annotations": [
            {"was_cancelled": False, "result": [{"type": "choices", "value": {"choices": ["1"]}}]}
        ],
    }
    export = [task, {**task, "data": {"seals_id": "b"}}]
    outcomes = {"parsed": 0, "rejected": 0}
    for mutated in _mutations(export, WRONG_TYPES):
        try:
            result = check("l.json", json.dumps(mutated))
        except LabelFileError:
            outcomes["rejected"] += 1
        else:
            assert set(result.new) <= {"a", "b"}
            assert set(result.new.values()) <= {0, 1}
            outcomes["parsed"] += 1
    assert outcomes["parsed"] > 0, outcomes
    assert outcomes["rejected"] > 100, outcomes


@pytest.mark.hostile
def test_a_choice_must_be_one_string():
    def export(choices) -> str:
        return json.dumps(
            [
                {
                    "data": {"seals_id": "a"},
                    "annotations": [{"result": [{"type": "choices", "value": {"choices": choices}}]}],
                }
            ]
        )

    no_choice = (
        "task 1 (seals_id 'a')",
        f"an annotation has no single choice; expected {CONCEPT!r} or 'not {CONCEPT}'",
    )
    assert problems("l.json", export("1")) == [no_choice]
    assert problems("l.json", export([1])) == [no_choice]
    outside = json.loads(export(["maybe"]))
    outside[0] |= {"id": 17}
    outside[0]["annotations"][0]["id"] = 4
    assert problems("l.json", json.dumps(outside)) == [
        (
            "task 17 (seals_id 'a')",
            f"annotation 4 has the choice 'maybe'; expected {CONCEPT!r} or 'not {CONCEPT}'",
        )
    ]
    assert check("l.json", export(["1"])).new == {"a": 1}


@pytest.mark.hostile
def test_jsonl_records_of_any_shape_are_parsed_or_rejected_never_a_crash():
    wheres = set()
    for mutated in _mutations({"id": "a", "label": 1}, WRONG_TYPES):
        try:
            check("l.jsonl", json.dumps(mutated) + "\n")
        except LabelFileError as e:
            wheres.update(p.where for p in e.problems)
    assert wheres == {"line 1"}, "every rejection names the line"
    assert problems("l.jsonl", '{"id": ["a"], "label": 1}\n') == [("line 1", "an id is a string, not a list")]


def test_several_annotators_of_one_item_are_votes_with_their_agreement():
    """A file that names its annotators may label an item once per person: the majority is the
    label, kept with every voter and their agreement; a tie leaves the item pending."""
    text = (
        "id,label,annotator,labeled_at\n"
        "a,1,alice,2026-12-01T10:00:00Z\n"
        "a,yes,bob,2026-12-01T11:00:00Z\n"
        "a,0,carol,2026-12-01T09:00:00Z\n"
        "b,1,alice,\n"
        "b,0,bob,\n"
        "c,0,alice,\n"
    )
    checked = check("votes.csv", text)
    assert checked.new == {"a": 1, "c": 0}, "b tied: not labeled"
    assert checked.pending_tasks == 1
    assert checked.provenance()["a"] == {
        "by": ["alice", "bob", "carol"],
        "agreement": 0.6667,
        "labeled_at": "2026-12-01T11:00:00Z",
    }
    assert checked.provenance()["c"] == {"by": ["alice"]}


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id,label,annotator\na,1,alice\na,0,alice\n", "id 'a' labeled 1 at line 2 and 0 here"),
        ("id,label\na,1\na,0\n", "id 'a' labeled 1 at line 2 and 0 here"),
        ("id,label,annotator\na,1,alice\na,0,\n", "id 'a' labeled 1 at line 2 and 0 here"),
        ("id,label,annotator\nd,1,alice\nd,0,bob\n", "id 'd' is not in the open batch"),
    ],
)
def test_one_annotator_twice_or_no_annotator_is_no_vote(text, expected):
    """Two different labels for an item by one person, or by nobody named, is a contradiction, as
    before; a tie on an item the file may not label is refused all the same."""
    assert any(expected in message for _, message in problems("x.csv", text))
