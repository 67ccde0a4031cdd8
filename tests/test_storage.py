"""Atomic writes: a failure mid-write leaves the previous file exactly as it was."""

from __future__ import annotations

import pytest

from seals_al.storage import atomic_path, write_json_atomic, write_text_atomic


def crash_mid_write(target):
    with atomic_path(target) as tmp:
        tmp.write_text('{"round": 2, "half')
        raise RuntimeError("crash")


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"round": 1})
    with pytest.raises(RuntimeError, match="crash"):
        crash_mid_write(target)
    assert target.read_text() == '{\n  "round": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
