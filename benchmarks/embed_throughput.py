"""Embedding throughput: the Beam pipeline vs a plain loop over the same model, same texts, one run.

Both embed the first --texts CLINC150 texts with all-MiniLM-L6-v2 on the CPU, batches of up to 256.
Times are wall clock and include loading the model once (the plain loop loads it too), so the ratio
is what a user sees; the Beam run also includes reading the CSV, writing shards and publishing the
store. Writes its section of docs/BENCHMARKS.md.

    python benchmarks/embed_throughput.py
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, update_section

from seals_al.embed.pipeline import run
from seals_al.encoder import MiniLMEncoder

DATA = ROOT / "data" / "clinc150" / "clinc150.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=5000)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    with DATA.open(newline="") as f:
        rows = [r for _, r in zip(range(args.texts), csv.DictReader(f), strict=False)]
    texts = [r["text"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows((r["id"], r["text"]) for r in rows)

        started = time.perf_counter()
        encoder = MiniLMEncoder(batch_size=256)
        encoder.load()
        loaded = time.perf_counter()
        encoder.encode(texts)
        plain = time.perf_counter() - started
        plain_encode = time.perf_counter() - loaded

        started = time.perf_counter()
        manifest = run([f"--input={path}", f"--output={Path(tmp) / 'store'}"])
        beam = time.perf_counter() - started
        assert manifest["count"] == len(texts)

    n = len(texts)
    lines = [
        "## Embedding throughput: Beam pipeline vs a plain loop",
        "",
        f"Reproduce: `make benchmarks` or `{' '.join(['python benchmarks/embed_throughput.py', *argv])}`.",
        "",
        f"{n:,} CLINC150 texts, all-MiniLM-L6-v2 on the CPU (2 cores), batches up to 256, one process, "
        "wall clock including the model load; the Beam run (FnApiRunner, in process) also reads the "
        "CSV, writes shards and publishes the store.",
        "",
        "| | seconds | texts/s |",
        "|---|---|---|",
        f"| plain loop (`encode`) | {plain:.1f} | {n / plain:.0f} |",
        f"| plain loop, encode only (model already loaded) | {plain_encode:.1f} | {n / plain_encode:.0f} |",
        f"| Beam pipeline (`seals-al embed`) | {beam:.1f} | {n / beam:.0f} |",
        "",
        f"Beam / plain loop throughput: **{plain / beam:.2f}x**.",
    ]
    update_section("embed_throughput", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
