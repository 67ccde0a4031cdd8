"""Helpers shared by the benchmark scripts: where results go and how docs/BENCHMARKS.md is updated."""

from __future__ import annotations

import re
from pathlib import Path

from seals_al.storage import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BENCHMARKS_MD = DOCS / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Measured by the scripts in `benchmarks/` (never by tests). Each section is rewritten by its "
    "script with the command that reproduces it; `make benchmarks` runs them all.\n"
)


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers in docs/BENCHMARKS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    write_text_atomic(BENCHMARKS_MD, text)


def write_json(path: Path, data: object) -> None:
    write_json_atomic(path, data)
