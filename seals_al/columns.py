"""Columns of an item table stored for reads by position: strings item by item with their offsets,
and 64-bit hashes of ids for lookups by id (seals_al.prepared)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seals_al import ranges
from seals_al.arrays import ArrayFile, gather
from seals_al.folders import Folder, LocalFolder

SPAN_READ_BYTES = 1 << 20  # strings within this many bytes are read in one go, however few


def hash64(values: Sequence[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in values),
        dtype=np.uint64,
        count=len(values),
    )


class Strings:
    """Columns of strings stored item by item: each item's strings side by side (UTF-8) in one
    bytes file, their offsets in one array ``[n + 1, columns]`` (column j of item i starts at
    ``offsets[i, j]`` and ends where the next string starts). Reading items' strings, whatever
    columns are asked for, is then two reads per item (on gs://: two batches for them all): their
    offsets, then their bytes. When the items asked for fill at least half of the bytes they span,
    or that span is at most :data:`SPAN_READ_BYTES` (a scan of every item, a run of new items),
    the span is read at once."""

    def __init__(self, folder: Folder | Path, columns: Sequence[str], access: str = "rows"):
        folder = folder if isinstance(folder, Folder) else LocalFolder(folder)
        self.columns = list(columns)
        self.offsets = folder.array("strings.offsets.npy", access)
        self.source = folder.source("strings.bytes")

    @staticmethod
    def write(folder: Path, columns: dict[str, Sequence[str]]) -> None:
        """Write the columns (each one string per item, in item order)."""
        values = list(columns.values())
        n = len(values[0])
        offsets = np.zeros((n + 1, len(values)), np.int64)
        at = 0
        with open(folder / "strings.bytes", "wb") as out:
            for i in range(n):
                for j, column in enumerate(values):
                    encoded = column[i].encode()
                    offsets[i, j] = at
                    out.write(encoded)
                    at += len(encoded)
        offsets[n, :] = at
        np.save(folder / "strings.offsets.npy", offsets)

    def at(self, positions: Sequence[int] | np.ndarray, columns: Sequence[str] = ("ids",)) -> list[list[str]]:
        """The asked columns' strings of the items at these positions (a list per column)."""
        positions = np.asarray(positions, np.int64)
        n, asked = len(positions), [self.columns.index(c) for c in columns]
        if not n:
            return [[] for _ in asked]
        bounds = read_rows([(self.offsets, np.concatenate([positions, positions + 1]))])[0]
        here = bounds[:n]
        ends = np.concatenate([here[:, 1:], bounds[n:, :1]], axis=1)  # where each string ends
        low, high = here[:, min(asked)], ends[:, max(asked)]
        span_low, span_high = int(low.min()), int(high.max())
        if span_high - span_low <= max(SPAN_READ_BYTES, 2 * int((high - low).sum())):
            span = bytearray(span_high - span_low)  # the strings fill at least half of it: one read
            ranges.read([(self.source, span_low, memoryview(span))])
            parts, origin = [span] * n, np.full(n, span_low)
        else:
            parts = [bytearray(int(b - a)) for a, b in zip(low, high, strict=True)]
            ranges.read(
                [(self.source, int(a), memoryview(part)) for a, part in zip(low, parts, strict=True) if part]
            )
            origin = low
        out = []
        for j in asked:
            a, b = (here[:, j] - origin).tolist(), (ends[:, j] - origin).tolist()
            out.append([parts[i][a[i] : b[i]].decode() for i in range(n)])
        return out


def read_rows(parts: list[tuple[np.ndarray | ArrayFile, np.ndarray]]) -> list[np.ndarray]:
    """Rows of arrays that are on disk (one batch) or in memory."""
    on_disk = [(a, p) for a, p in parts if isinstance(a, ArrayFile)]
    read = iter(gather(on_disk))
    return [next(read) if isinstance(a, ArrayFile) else np.asarray(a[p]) for a, p in parts]
