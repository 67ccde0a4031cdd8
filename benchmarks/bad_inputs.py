"""What a bad input costs and leaves behind: every class of bad input a user or an attacker can
hand the product, each given to the real CLI in a fresh process, as a user runs it. For each:
the exit code, the one-line message, whether a traceback was printed, whether anything the
command did not own changed (the campaign, the output folder), and the process's peak RSS.

Data: 20,000 synthetic 384-d items (the round-cost benchmark's generator), a campaign after
round 0; every label-file case starts from a fresh copy of it.

Writes docs/RELIABILITY.md (the table, with the number of hostile cases in the test suite) and
docs/benchmarks/bad_inputs.json.

    python benchmarks/bad_inputs.py     # about two minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, ROOT, run_measured, write_json
from round_cost import CONCEPT, campaign_yaml, make_data, seed_file

from seals_al.campaign import Campaign
from seals_al.errors import cut
from seals_al.labelformats.answers import MAX_PROBLEMS
from seals_al.labelformats.files import MAX_LABEL_FILE_BYTES
from seals_al.storage.files import write_text_atomic

RESULTS = DOCS / "benchmarks" / "bad_inputs.json"
RELIABILITY = DOCS / "RELIABILITY.md"
N = 20_000


@dataclass(frozen=True)
class Case:
    kind: str  # the class of input
    what: str  # this case
    setup: Callable[[Path, dict], tuple[list[str], list[Path]]]  # -> (command, what must not change)


def snapshot(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under the given paths (reports/ aside: a rejection report is the one
    thing a rejected label file adds to a campaign, by design)."""
    digests = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "reports" not in path.relative_to(root.parent).parts:
                digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        if not root.exists():
            digests[str(root)] = "absent"
    return digests


# -- the cases -----------------------------------------------------------------------------------
def label_files(files: Callable[[dict], dict[str, bytes | None]]):
    """Label files dropped into the open batch's inbox (None: a sparse file of 1 GiB), then
    `seals-al round`."""

    def setup(work: Path, ctx: dict) -> tuple[list[str], list[Path]]:
        campaign = copy_of_base(work, ctx)
        inbox = campaign / "inbox" / "000"
        inbox.mkdir(parents=True, exist_ok=True)
        for name, data in files(ctx).items():
            if data is None:
                with open(inbox / name, "wb") as f:
                    f.truncate(2**30)
            else:
                (inbox / name).write_bytes(data)
        return ["round", str(campaign)], [campaign]

    return setup


def label_file(name: str, content: Callable[[dict], bytes | None]):
    return label_files(lambda ctx: {name: content(ctx)})


def config(text: str):
    """A campaign config given to `seals-al init`."""

    def setup(work: Path, ctx: dict) -> tuple[list[str], list[Path]]:
        path = work / "campaign.yaml"
        given = {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}
        kept = [line for line in ctx["config"].splitlines() if line.split(":", 1)[0] not in given]
        path.write_text("".join(f"{line}\n" for line in kept) + text)  # a setting is given once
        return ["init", str(path), str(work / "new")], [work / "new"]

    return setup


def items(name: str, content: Callable[[dict], bytes]):
    """An item table given to `seals-al simulate`."""

    def setup(work: Path, ctx: dict) -> tuple[list[str], list[Path]]:
        path = work / name
        path.write_bytes(content(ctx))
        out = work / "out"
        return ["simulate", "--data", str(path), "--concept", "rare", "--out", str(out)], [out]

    return setup


def command(args: Callable[[Path, dict], list[str]], watched: Callable[[Path, dict], list[Path]]):
    def setup(work: Path, ctx: dict) -> tuple[list[str], list[Path]]:
        return args(work, ctx), watched(work, ctx)

    return setup


def embed_json_lines(work: Path, ctx: dict) -> list[str]:
    items = work / "items.json"
    items.write_text('{"id": "a", "text": "hello"}\n')
    return ["embed", f"--input={items}", f"--output={work / 'store'}"]


def csv_rows(*rows: str) -> bytes:
    return ("id,label\n" + "".join(f"{r}\n" for r in rows)).encode()


def copy_of_base(work: Path, ctx: dict) -> Path:
    campaign = work / "campaign"
    shutil.copytree(ctx["base"], campaign)
    return campaign


CASES = [
    Case("label file", "an id that is no item", label_file("l.csv", lambda c: csv_rows("nobody,1"))),
    Case(
        "label file",
        "an item outside the open batch",
        label_file("l.csv", lambda c: csv_rows(f"{c['other']},1")),
    ),
    Case(
        "label file",
        "an item of the evaluation split",
        label_file("l.csv", lambda c: csv_rows(f"{c['held_out']},1")),
    ),
    Case("label file", "an invalid label", label_file("l.csv", lambda c: csv_rows(f"{c['first']},maybe"))),
    Case(
        "label file",
        "one id labeled twice, differently",
        label_file("l.csv", lambda c: csv_rows(f"{c['first']},1", f"{c['first']},0")),
    ),
    Case(
        "label file",
        "two files of one round that disagree",
        label_files(lambda c: {"a.csv": csv_rows(f"{c['first']},1"), "b.csv": csv_rows(f"{c['first']},0")}),
    ),
    Case(
        "label file",
        "a JSONL file cut short",
        label_file("l.jsonl", lambda c: f'{{"id": "{c["first"]}", "la'.encode()),
    ),
    Case("label file", "not UTF-8", label_file("l.csv", lambda c: "id,label\ncaf\xe9,1\n".encode("latin-1"))),
    Case(
        "label file",
        "the wrong columns",
        label_file("l.csv", lambda c: f"item,answer\n{c['first']},1\n".encode()),
    ),
    Case(
        "label file",
        "an unclosed quote",
        label_file("l.csv", lambda c: f'id,label\n"{c["first"]},1\n'.encode()),
    ),
    Case(
        "label file",
        "a Label Studio export of the wrong shape",
        label_file(
            "l.json",
            lambda c: json.dumps([{"data": {"seals_id": c["first"]}, "annotations": "yes"}]).encode(),
        ),
    ),
    Case(
        "label file", "an unsupported file type", label_file("l.txt", lambda c: csv_rows(f"{c['first']},1"))
    ),
    Case(
        "label file",
        "a 1 MB id with terminal escape codes",
        label_file(
            "l.jsonl", lambda c: json.dumps({"id": "\x1b[31m\x07" + "x" * 2**20, "label": 1}).encode()
        ),
    ),
    Case("label file", "1 GiB (over the size limit)", label_file("l.csv", lambda c: None)),
    Case(
        "label file",
        f"{MAX_LABEL_FILE_BYTES // 2**20} MiB of invalid lines (the largest file read)",
        label_file("l.csv", lambda c: b"id,label\n" + b"nobody,maybe\n" * (MAX_LABEL_FILE_BYTES // 13 - 1)),
    ),
    Case("campaign config", "an unknown setting", config("colour: blue\n")),
    Case("campaign config", "a number given as text", config('k: "10"\n')),
    Case("campaign config", "a boolean where an integer goes", config("budget: true\n")),
    Case(
        "campaign config", "a YAML alias bomb", config('a: &a ["x", "x"]\nb: &b [*a, *a]\nc: &c [*b, *b]\n')
    ),
    Case(
        "campaign config",
        "a YAML tag that runs code",
        config("strategy: !!python/object/apply:os.system ['true']\n"),
    ),
    Case("campaign config", "a k as large as U (round 0 grew past 20 GB)", config("k: 1000000\n")),
    Case("campaign config", "more IVF lists than U has rows", config("index_factory: IVF1000000,Flat\n")),
    Case("campaign config", "a negative seed (every round crashed)", config("seed: -1\n")),
    Case("campaign config", "an infinite C", config("C: .inf\n")),
    Case("campaign config", "a setting given twice", config("budget: 10\nbudget: 20\n")),
    Case(
        "wait",
        "a poll interval that is not a number of seconds",
        command(
            lambda w, c: ["wait", str(copy_of_base(w, c)), "--poll-seconds", "nan"],
            lambda w, c: [w / "campaign"],
        ),
    ),
    Case("item table", "a missing column", items("items.csv", lambda c: b"id,text,label\na,hello,x\n")),
    Case(
        "item table",
        "a repeated id",
        items("items.csv", lambda c: b"id,text,label,split\na,hi,x,train\na,ho,y,train\n"),
    ),
    Case(
        "item table", "a 64 MB line", items("items.jsonl", lambda c: b'{"id": "a", "text": "' + b"x" * 2**26)
    ),
    Case(
        "item table",
        "a cell over the limit",
        items("items.csv", lambda c: b"id,text,label,split\na," + b"x" * 200_000 + b",x,train\n"),
    ),
    Case(
        "item table",
        "JSON lines named .json, given to embed (its reader took them, the round's did not)",
        command(embed_json_lines, lambda w, c: [w / "store"]),
    ),
    Case(
        "storage",
        "a gs:// bucket name GCS refuses",
        command(lambda w, c: ["status", "gs://Not_A_Bucket/c"], lambda w, c: []),
    ),
    Case(
        "storage",
        "a gs:// path with ..",
        command(lambda w, c: ["status", "gs://bucket/a/../b"], lambda w, c: []),
    ),
    Case(
        "output folder",
        "simulate --out pointing at a campaign",
        command(
            lambda w, c: simulate_over(c, copy_of_base(w, c)),
            lambda w, c: [w / "campaign"],
        ),
    ),
    Case(
        "output folder",
        "report --out pointing at a committed round",
        command(
            lambda w, c: ["report", str(copy_of_base(w, c)), "--out", str(w / "campaign" / "rounds" / "000")],
            lambda w, c: [w / "campaign"],
        ),
    ),
    Case(
        "output folder",
        "build-index into a folder of the user's",
        command(
            lambda w, c: ["build-index", c["store"], str(folder_of_the_users(w)), "--factory", "Flat"],
            lambda w, c: [w / "mine"],
        ),
    ),
    Case(
        "output folder",
        "init into a folder of the user's",
        command(
            lambda w, c: ["init", str(config_file(w, c)), str(folder_of_the_users(w))],
            lambda w, c: [w / "mine"],
        ),
    ),
    Case(
        "output folder",
        "compare --out naming a file that is not a PNG",
        command(
            lambda w, c: [
                "compare",
                str(simulation(w, c)),
                "--out",
                str(folder_of_the_users(w) / "notes.txt"),
            ],
            lambda w, c: [w / "mine"],
        ),
    ),
    Case(
        "embeddings",
        "a NaN in precomputed embeddings",
        command(
            lambda w, c: simulate_over(c, w / "out", "--embeddings", str(nan_embeddings(w))),
            lambda w, c: [w / "out"],
        ),
    ),
]


def simulate_over(ctx: dict, out: Path, *extra: str) -> list[str]:
    """`seals-al simulate` over the benchmark's items, writing to ``out``."""
    return [
        "simulate", "--data", ctx["items"], "--concept", CONCEPT, "--truth-column", "label",
        "--split-column", "split", "--out", str(out), *extra,
    ]  # fmt: skip


def folder_of_the_users(work: Path) -> Path:
    folder = work / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("the user's own notes")
    return folder


def config_file(work: Path, ctx: dict) -> Path:
    path = work / "campaign.yaml"
    path.write_text(ctx["config"])
    return path


def simulation(work: Path, ctx: dict) -> Path:
    """A simulation's output folder (its summary is all compare reads)."""
    out = work / "run"
    out.mkdir()
    summary = {"config": {"concept": CONCEPT, "strategy": "maxent", "mode": "seals"}, "rounds": []}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def nan_embeddings(work: Path) -> Path:
    vectors = np.random.default_rng(0).normal(size=(N, 384)).astype(np.float32)
    vectors[17, 3] = np.nan
    path = work / "embeddings.npy"
    np.save(path, vectors)
    return path


# -- running -------------------------------------------------------------------------------------
def prepare(work: Path, env: dict) -> dict:
    """The data and a campaign after round 0, and the ids the cases need."""
    items, store = make_data(N, 384, 0, work / "data")
    seeds = seed_file(items, N, 0, work)
    yaml = campaign_yaml(work, items, store, seeds, "seals", N)
    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    for args in (["init", str(yaml), str(base)], ["round", str(base)]):
        subprocess.run(
            [sys.executable, "-m", "seals_al.cli", *args], env=env, check=True, stdout=subprocess.DEVNULL
        )
    campaign = Campaign(str(base), progress=False)
    state = campaign.state()
    batch = [row["id"] for row in state.batch]
    with open(items) as f:
        rows = [line.rstrip("\n").split(",") for line in f][1:]
    held_out = next(r[0] for r in rows if r[3] == "test")
    other = next(r[0] for r in rows if r[3] == "train" and r[0] not in batch and r[0] not in state.labeled)
    config = yaml.read_text()
    return {
        "base": base,
        "items": str(items),
        "store": str(store),
        "first": batch[0],
        "other": other,
        "held_out": held_out,
        "config": config,
    }


def run_case(case: Case, work: Path, ctx: dict, env: dict) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args, watched = case.setup(work, ctx)
    before = snapshot(watched)
    measured = run_measured(args, env, work, capture_stderr=True)
    err = measured.pop("stderr")
    lines = err.strip().splitlines()
    return {
        "kind": case.kind,
        "case": case.what,
        "command": args[0],
        "exit_code": measured["exit_code"],
        "message": lines[-1] if lines else "",
        "stderr_lines": len(lines),
        "traceback": "Traceback" in err,
        "unchanged": snapshot(watched) == before,
        "peak_rss_mb": measured["peak_rss_mb"],
        "read_mb": measured["rchar"] / 1e6,
        "seconds": measured["seconds"],
    }


def hostile_tests() -> int:
    """How many test cases of the suite are marked hostile (bad or hostile input)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "hostile", "--collect-only", "-q"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.strip().splitlines()[-1].split("/")[0])


def shown_message(message: str, work: str) -> str:
    return cut(message.replace(work, "WORK").replace("|", "\\|"), 160)


def markdown(results: list[dict], hostile: int, work: str) -> str:
    clean = sum(
        r["exit_code"] == 2 and not r["traceback"] and r["stderr_lines"] == 1 and r["unchanged"]
        for r in results
    )
    lines = [
        "# Reliability: bad input is a clean rejection",
        "",
        "Every class of bad input below was handed to the real `seals-al` command in a fresh process "
        "by `python benchmarks/bad_inputs.py`, which wrote this page. A clean rejection is exit code "
        "2, one line on stderr naming the file, line or field, no traceback, and nothing the command "
        "does not own changed (the campaign but for its rejection report under `reports/`, the "
        "output folder, the folder `init` would create). Peak RSS is the process's own high-water "
        "mark (VmHWM), imports included.",
        "",
        f"**{clean} of {len(results)} cases are clean rejections.** The test suite holds {hostile} test "
        "cases marked `hostile` (`python -m pytest -m hostile`), the property-based ones among them "
        "each trying 150 generated inputs (`tests/test_properties.py`).",
        "",
        "| input | case | command | exit | message (WORK: the case's folder) | nothing changed "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['case']} | `{r['command']}` | {r['exit_code']} | "
            f"{shown_message(r['message'], work)} | {'yes' if r['unchanged'] else '**no**'} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Rules the product keeps, and where they are enforced:",
        "",
        "- Label files are checked for size before they are read (`seals_al/labelformats/files.py`, "
        f"{MAX_LABEL_FILE_BYTES // 2**20} MiB); a file with any problem is rejected whole, with its "
        f"problems and their lines (the first {MAX_PROBLEMS:,}, and how many in all) in a report under "
        "`reports/`, and nothing of the round is staged.",
        "- A label file that arrives after its round committed is taken in by the next round, and "
        "`seals-al status` lists every file not taken in yet: rejected (with its report), late, or "
        "waiting.",
        "- Campaign configs: types checked strictly (a boolean is not an integer), YAML aliases and "
        "tags refused, 1 MiB at most (`seals_al/campaign/config.py`).",
        "- Item tables: one cell at most 131,072 characters in every format, a JSONL line refused "
        "past eight times that without being read whole (`seals_al/items.py`).",
        "- One reader of item files (`seals_al/items.py`, `item_rows`) for a round and for the Beam "
        "embedding pipeline: a file the round takes, the pipeline embeds whole; a row the round "
        "refuses the file at is a dead letter of the pipeline naming the same line and reason "
        "(`tests/test_embed_pipeline.py`).",
        "- Inbox files that are never labels (hidden, a name not every storage holds, a link out of "
        "the campaign) are not read, and `seals-al status` names each with why, on a local disk as "
        "on gs://.",
        "- A Label Studio pull exports only what the open round needs (its batch's annotated tasks, "
        "earlier tasks updated since the last ingested pull), a hundred tasks a request, and keeps "
        "no text: its file does not grow with the campaign. Push and pull hold a lease of their own, "
        "never the campaign's, while Label Studio is waited on, and every call has a deadline for "
        "its whole answer (`tests/test_labelstudio.py`).",
        "- Storage keys and gs:// URIs are validated before any network call "
        "(`seals_al/storage/base.py`, `seals_al/storage/uris.py`).",
        "- Commands that write refuse an output folder holding anything they did not write.",
        "- A round killed at any step is finished by the next run; a second concurrent round fails "
        "clearly (`tests/test_campaign.py`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/seals-bad-inputs"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEALS_CACHE_DIR": str(args.work / "cache"), "HF_HUB_OFFLINE": "1"}
    ctx = prepare(args.work, env)
    results = [
        run_case(case, args.work / "case", ctx, env) for case in tqdm(CASES, desc="bad inputs", unit="case")
    ]
    write_json(RESULTS, results)
    write_text_atomic(RELIABILITY, markdown(results, hostile_tests(), str(args.work / "case")))
    print(RELIABILITY.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
