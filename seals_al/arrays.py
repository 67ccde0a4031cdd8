"""Arrays on disk (.npy files), opened one of three ways (:data:`ACCESS`):

- ``rows``: read by position, one read per run of nearby rows (:mod:`seals_al.ranges`: a
  positioned read of a local file, a ranged GET of an object on gs://); nothing is mapped or read
  whole. What a one-round process uses: a round touches a few thousand rows of files with
  millions, and reads exactly those, on this machine's disk or on object storage. (A memory map
  is no substitute: its page faults map whole cached folios, and gathering 1,000 scattered rows
  of a 768 MB shard made all of it resident here.)
- ``mapped``: memory-mapped, for a long-lived process that reads rows as it goes; each first
  touch of a page is a page fault.
- ``ram``: memory-mapped with every page read in and mapped at once (``MADV_POPULATE_READ``), for
  a long-lived process whose data fits in memory (a simulation): reads at memory speed from the
  first round, without copying the file (1.5 GB at 1M rows opened in 0.15 s with the page cache
  warm, against 3.75 s to copy it).

:class:`ArrayFile` (``rows``) answers the indexing a caller needs, ``a[positions]``,
``a[start:stop]`` and ``a[i]``, so code reads an array the same whichever way it was opened; and
:func:`search_sorted` finds values in a sorted array either way, through a sparse sample kept in
RAM when the array is on disk. The rows a step needs from several arrays are read as one batch
(:func:`gather`): on object storage their requests are in flight together.
"""

from __future__ import annotations

import io
import mmap
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from seals_al import ranges
from seals_al.errors import SealsError
from seals_al.ranges import LocalFile, Source

ACCESS = ("rows", "mapped", "ram")
SAMPLE_EVERY = 4096  # a sorted file's sparse sample: one value per block of this many


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by sorting. numpy 2.4's own takes a hash-based path when asked for
    the values alone: 0.6-0.7 s for 1M 64-bit ids here, sorted or not, against 0.01 s to sort."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz that ``np.load`` reads, whose bytes depend only on the arrays. ``np.savez``'s zip
    headers depend on the Python release (3.11.7 writes its forced zip64 as version 4.5, 3.11.2 as
    2.0), so the same pool saved in a container and on a laptop differed byte for byte."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), data.getvalue())
    return out.getvalue()


class NpyWriter:
    """A .npy file of a known shape written row block after row block, in order, with plain
    writes: what it holds never stays in this process's memory (a memory map's written pages
    do, counted in its RSS, until the kernel writes them back)."""

    def __init__(self, path: Path, dtype: np.dtype | type, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape, self.rows = path, np.dtype(dtype), shape, 0
        self._f = open(path, "wb")  # noqa: SIM115 (closed by close() or on leaving a with block)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self._f, header)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise SealsError(
                f"{self.path}: rows of shape {block.shape} at row {self.rows:,} do not fit {self.shape}"
            )
        self._f.write(np.ascontiguousarray(block, dtype=self.dtype).data)
        self.rows += len(block)

    def close(self) -> None:
        self._f.close()
        if self.rows != self.shape[0]:
            raise SealsError(f"{self.path}: {self.rows:,} of {self.shape[0]:,} rows written")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()  # checks every row came
        else:
            self._f.close()  # the writer's own error is what is raised


def npy_header(path: str | Path | Source) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a C-order .npy file of plain numbers, local or
    remote (its first bytes read: one request)."""
    source = path if isinstance(path, Source) else LocalFile(path)
    head = source.read(0, min(source.size, 4096))
    try:
        f = io.BytesIO(head)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise SealsError(f"{source.where}: not a .npy array: {e}") from e
    offset = f.tell()
    if fortran or dtype.hasobject:
        raise SealsError(f"{source.where}: expected a C-order array of numbers")
    check_npy_size(source, shape, dtype, offset)
    return shape, dtype, offset


def describe_dtype(dtype: np.dtype) -> str | list:
    """A dtype as JSON can hold it (records' fields included), for :func:`dtype_of`."""
    return np.lib.format.dtype_to_descr(dtype)


def dtype_of(described: str | list) -> np.dtype:
    """The dtype :func:`describe_dtype` described (after a round trip through JSON)."""
    if isinstance(described, str):
        return np.dtype(described)
    fields = [tuple(tuple(v) if isinstance(v, list) else v for v in field) for field in described]
    return np.lib.format.descr_to_dtype(fields)


def check_npy_size(source: Source, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    """A .npy file's data must fit in the file: a shorter file was cut short."""
    if offset + int(np.prod(shape)) * dtype.itemsize > source.size:
        raise SealsError(f"{source.where}: truncated ({source.size:,} bytes for shape {shape})")


MADV_POPULATE_READ = 22  # Linux 5.14+; not among Python 3.11's mmap constants


def map_array(path: Path, populate: bool = False) -> np.ndarray:
    """A .npy file memory-mapped read-only; ``populate`` reads in and maps every page now."""
    shape, dtype, offset = npy_header(path)
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if populate:
        try:
            mapped.madvise(MADV_POPULATE_READ)
        except OSError:  # an older kernel: ask for the pages ahead, faults map them as they come
            mapped.madvise(mmap.MADV_WILLNEED)
    return np.ndarray(shape, dtype, buffer=mapped, offset=offset)


def open_array(path: str | Path | Source, access: str = "rows") -> np.ndarray | ArrayFile:
    """A .npy file opened for reading as ``access`` says (:data:`ACCESS`); a remote file is read
    by rows whatever ``access`` says (it has no pages to map)."""
    if access not in ACCESS:
        raise SealsError(f"unknown array access {access!r}; use one of {', '.join(ACCESS)}")
    if access == "rows" or isinstance(path, Source):
        return ArrayFile(path)
    return map_array(Path(path), populate=access == "ram")


class ArrayFile:
    """A .npy array read by position, locally or on object storage: ``a[positions]``,
    ``a[start:stop]``, ``a[i]`` read just those rows, in one batch of reads (:func:`gather`
    reads rows of several arrays in one batch)."""

    def __init__(
        self, source: str | Path | Source, header: tuple[tuple[int, ...], np.dtype, int] | None = None
    ):
        self.source = source if isinstance(source, Source) else LocalFile(source)
        self.path = self.source.where  # for messages
        if header is None:
            header = npy_header(self.source)
        else:
            check_npy_size(self.source, *header)
        self.shape, self.dtype, self._offset = header
        self.ndim = len(self.shape)
        self._row_shape = self.shape[1:]
        self._row_bytes = self.dtype.itemsize * int(np.prod(self._row_shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            return self.read(start, stop)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            return self.take(np.asarray([i]))[0]
        return self.take(np.asarray(key))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 with one read."""
        stop = max(start, min(stop, len(self)))
        out = np.empty((stop - start, *self._row_shape), self.dtype)
        if out.size:  # no rows (an empty evaluation split, say): nothing to read
            ranges.read([(self.source, self._offset + start * self._row_bytes, memoryview(out).cast("B"))])
        return out

    def take(self, positions: np.ndarray, merge: bool = True) -> np.ndarray:
        """Rows at the given positions, in the order given (repeats allowed); ``merge`` reads
        nearby rows as one range, the gap included (off: one range per run of adjacent rows)."""
        return gather([(self, positions)], merge)[0]

    def _unique(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct positions asked for, sorted, and where each asked one is among them."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.ndim != 1:
            raise SealsError(f"{self.path}: positions must be one-dimensional")
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            bad = int(positions[(positions < 0) | (positions >= len(self))][0])
            raise SealsError(f"{self.path}: position {bad} outside 0..{len(self) - 1}")
        return np.unique(positions, return_inverse=True)

    def _plan(
        self, positions: np.ndarray, unique: np.ndarray, inverse: np.ndarray, cut: np.ndarray
    ) -> tuple[list[ranges.Request], Callable[[], np.ndarray]]:
        """The reads that fetch these rows, one per span (``cut[i]``: a new span starts at
        ``unique[i + 1]``; rows in a span are read together, gap included), and what assembles
        them once read."""
        if not len(unique):
            empty = np.empty((0, *self._row_shape), self.dtype)
            return [], lambda: empty
        out = np.empty((len(unique), *self._row_shape), self.dtype)
        view, size = memoryview(out).cast("B"), self._row_bytes
        breaks = np.flatnonzero(cut) + 1
        starts, ends = np.concatenate([[0], breaks]).tolist(), np.append(breaks, len(unique)).tolist()
        requests: list[ranges.Request] = []
        spans: list[tuple[int, int, np.ndarray]] = []  # (first slot, last slot, the span's rows read)
        for s, e in zip(starts, ends, strict=True):
            first, last = int(unique[s]), int(unique[e - 1])
            if last - first + 1 == e - s:  # adjacent rows: straight into place
                requests.append((self.source, self._offset + first * size, view[s * size : e * size]))
            else:
                block = np.empty((last - first + 1, *self._row_shape), self.dtype)
                requests.append((self.source, self._offset + first * size, memoryview(block).cast("B")))
                spans.append((s, e, block))

        def assemble() -> np.ndarray:
            for s, e, block in spans:
                out[s:e] = block[unique[s:e] - unique[s]]
            in_order = len(unique) == len(positions) and bool((positions[1:] > positions[:-1]).all())
            return out if in_order else out[inverse]

        return requests, assemble


def gather(parts: Sequence[tuple[ArrayFile, np.ndarray]], merge: bool = True) -> list[np.ndarray]:
    """The rows asked of each array (as :meth:`ArrayFile.take`), read as one batch: on object
    storage, every range of every array in flight at once. ``merge`` reads rows less than the
    source's merge gap apart as one range, the gap included (cheaper than another request; for
    small rows, such as ids, a lookup becomes a few reads), and on object storage, a batch that
    would take another round trip for a few requests reads through its smallest gaps instead
    (:func:`ranges.fewer_round_trips`); off, one range per run of adjacent rows."""
    asked = [(array, np.asarray(positions, np.int64)) for array, positions in parts]
    found = [array._unique(positions) for array, positions in asked]
    skipped = [np.diff(unique) - 1 for unique, _ in found]  # rows between two rows asked for
    cuts = []
    for (array, _), between in zip(asked, skipped, strict=True):
        rows = max(1, array.source.merge_gap // max(array._row_bytes, 1)) if merge else 1
        cuts.append(between >= rows)
    remote = [n for n, (array, _) in enumerate(asked) if array.source.remote and len(found[n][0])]
    if merge and remote:  # the smallest gaps, across the batch's remote arrays, read through
        where = [(n, i) for n in remote for i in np.flatnonzero(cuts[n]).tolist()]
        gaps = np.asarray([skipped[n][i] * asked[n][0]._row_bytes for n, i in where], np.int64)
        closed = ranges.fewer_round_trips(gaps, len(where) + len(remote))
        for at in np.argsort(gaps, kind="stable")[:closed].tolist():
            n, i = where[at]
            cuts[n][i] = False
    plans = [
        array._plan(positions, unique, inverse, cut)
        for (array, positions), (unique, inverse), cut in zip(asked, found, cuts, strict=True)
    ]
    ranges.read([request for requests, _ in plans for request in requests])
    return [assemble() for _, assemble in plans]


def search_sorted(
    sorted_values: np.ndarray | ArrayFile, wanted: np.ndarray, sample: np.ndarray | None
) -> np.ndarray:
    """``np.searchsorted(sorted_values, wanted)`` (left), for an array in memory or on disk; on
    disk, ``sample`` (from :func:`sparse_sample`) picks the one block each value can be in, and
    only those blocks are read, as one batch."""
    if not isinstance(sorted_values, ArrayFile):
        return np.searchsorted(sorted_values, wanted)
    wanted = np.asarray(wanted)
    n = len(sorted_values)
    out = np.empty(len(wanted), np.int64)
    # Value v is at or after block b's first value and before block b + 1's.
    blocks = np.maximum(np.searchsorted(sample, wanted, side="left") - 1, 0)
    needed = np.unique(blocks).tolist()
    # Each block read with one more value than it holds, so a value equal to the next block's
    # first lands there.
    spans = [np.arange(b * SAMPLE_EVERY, min(n, (b + 1) * SAMPLE_EVERY + 1)) for b in needed]
    read = gather([(sorted_values, span) for span in spans], merge=False)
    for b, block in zip(needed, read, strict=True):
        mask = blocks == b
        out[mask] = b * SAMPLE_EVERY + np.searchsorted(block, wanted[mask])
    return out


def sparse_sample(sorted_values: np.ndarray | ArrayFile) -> np.ndarray | None:
    """Every :data:`SAMPLE_EVERY`-th value of a sorted array on disk (None in memory). Writers
    of sorted arrays that are read remotely publish it beside them (:func:`sample_of`), so a
    reader fetches it with one request instead of one per value."""
    if not isinstance(sorted_values, ArrayFile):
        return None
    return sorted_values.take(np.arange(0, len(sorted_values), SAMPLE_EVERY), merge=False)


def sample_of(sorted_values: np.ndarray) -> np.ndarray:
    """The sparse sample of a sorted array in memory, as :func:`sparse_sample` reads it."""
    return np.ascontiguousarray(sorted_values[::SAMPLE_EVERY])
