"""Helpers shared by the benchmark scripts: where results go and how docs/BENCHMARKS.md is updated."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from seals_al.storage.files import write_json_atomic, write_text_atomic

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


def publish(name: str, lines: list[str]) -> None:
    """Write this benchmark's section of docs/BENCHMARKS.md and print it."""
    text = "\n".join(lines)
    update_section(name, text)
    print(text)


def reproducing_command(
    script: str, parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> str:
    """The command that reproduces this run: the script, and each named option whose value is not
    its default (a list option's values space-separated)."""
    command = f"python benchmarks/{script}"
    for name in names:
        value = getattr(args, name)
        if value != parser.get_default(name):
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            command += f" --{name.replace('_', '-')} {shown}"
    return command


def write_json(path: Path, data: object) -> None:
    write_json_atomic(path, data)


# Runs a seals-al command in this process and, at exit, writes what it read to SEALS_MEASURE_OUT:
# read() bytes, and the resident pages of every data file it memory-mapped (maps kept open).
MEASURE = """
import atexit, json, mmap, os, sys
_maps = []
class _Kept(mmap.mmap):  # memory maps stay open until exit, so their touched pages can be counted
    def __init__(self, *args, **kwargs):
        _maps.append(self)
mmap.mmap = _Kept
def _report():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    mapped, path = 0, None
    root = os.environ["SEALS_MEASURE_ROOT"]
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            path = head[5] if len(head) > 5 else None
        elif head and head[0] == "Rss:" and path and path.startswith(root):
            mapped += int(head[1]) * 1024
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    peak = int(status["VmHWM"].split()[0]) * 1024  # this process's own high-water mark
    with open(os.environ["SEALS_MEASURE_OUT"], "w") as f:
        json.dump({"rchar": int(io["rchar"]), "mapped": mapped, "peak_rss": peak}, f)
atexit.register(_report)
from seals_al.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_measured(args: list[str], env: dict, root: Path, capture_stderr: bool = False) -> dict:
    """One seals-al command in a fresh process: its exit code, wall seconds (start to exit,
    imports included), peak RSS, bytes read, data-file pages mapped under ``root`` and, with
    ``capture_stderr``, what it wrote to stderr."""
    out = root / "measure.json"
    out.unlink(missing_ok=True)
    env = {**env, "SEALS_MEASURE_OUT": str(out), "SEALS_MEASURE_ROOT": str(root)}
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", MEASURE, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    read = json.loads(out.read_text())
    # Peak RSS as the process saw it (VmHWM): wait4's ru_maxrss would count this parent's RSS at
    # the fork too.
    measured = {
        "exit_code": child.returncode,
        "seconds": seconds,
        "peak_rss_mb": read.pop("peak_rss") / 2**20,
    }
    if capture_stderr:
        measured["stderr"] = child.stderr
    return {**measured, **read}
