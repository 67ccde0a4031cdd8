"""The index over U filled by Apache Beam workers that share nothing but object storage.

What costs, the workers do: each reads the training sample's rows in its ranges of the store; one
worker trains the index on the whole sample (the rows the one-process build samples,
:func:`~seals_al.index.build.training_sample`) and writes it to a work folder; each worker then
encodes its ranges with that trained index (``sa_encode``: each row's inverted list and code) and
writes the codes beside it. The driver adds the codes in row order (``add_sa_codes``) into the
layout the one-process build writes, so the inverted lists hold the same codes in the same order:
the same index, file for file (tests compare the bytes).

Only IVF indexes are filled this way (Flat, PQ, SQ codes, and PQ fast-scan, whose codes are added
to an IVF-PQ twin and packed by faiss's conversion, as its own merge cannot take packed blocks).
An HNSW index is one graph over every row, which parallel adds cannot build; a flat index has
nothing to compute but the vectors themselves.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
import faiss
import numpy as np
from tqdm import tqdm

from seals_al.beam_options import runner_options
from seals_al.errors import SealsError, shown

CHUNK_ROWS = 65_536  # rows encoded in one element
TRAINED = "trained.faiss"
TRAINING = "training.json"  # how long the training took, on the worker that trained


def _part(number: int) -> str:
    return f"part-{number:06d}.codes.npy"


def not_on_workers(dim: int, factory: str) -> str | None:
    """Why Beam workers cannot fill this factory's index, or None when they can."""
    from seals_al.index.build import empty_index

    owner = empty_index(dim, factory)  # kept: the downcast view does not own it
    index = faiss.downcast_index(owner)
    if not isinstance(index, faiss.IndexIVF):
        return (
            f"--factory {shown(factory)}: Beam workers fill IVF indexes only (IVF{{n}},Flat, "
            "IVF{n},PQ{m}, IVF{n},SQ8, IVF{n}_HNSW{M},PQ{m}x4fs)"
        )
    if isinstance(index, faiss.IndexIVFFastScan) and not isinstance(index, faiss.IndexIVFPQFastScan):
        return f"--factory {shown(factory)}: of the fast-scan indexes, Beam workers fill IVF-PQ only"
    return None


def check_beam_factory(dim: int, factory: str) -> None:
    """Refuse, before any work, a factory whose index Beam workers cannot fill."""
    why = not_on_workers(dim, factory)
    if why:
        raise SealsError(f"{why}; build this one in one process (without Beam options)")


class SampleRows(beam.DoFn):
    """(range number, rows, sample rows) -> (number, the sample rows' vectors as float32 bytes),
    for a range holding some of the training sample. The store is opened once per worker."""

    def __init__(self, store_uri: str):
        self.store_uri = store_uri

    def setup(self) -> None:
        from seals_al.store import EmbeddingStore

        self.store = EmbeddingStore.published(self.store_uri)

    def process(self, element: tuple[int, bytes, bytes]) -> Iterator[tuple[int, bytes]]:
        sample = np.frombuffer(element[2], "<i8")
        if len(sample):
            yield element[0], np.ascontiguousarray(self.store.vectors(sample), "<f4").tobytes()


def train_once(samples: list[tuple[int, bytes]], dim: int, factory: str, work_dir: str) -> str:
    """Train the empty index on the sample, gathered in row order, and write it into the work
    folder; returns its name there. Runs on one worker."""
    from seals_al.index.build import empty_index
    from seals_al.storage import open_storage

    started = time.perf_counter()
    index = empty_index(dim, factory)
    vectors = [np.frombuffer(data, "<f4").reshape(-1, dim) for _, data in sorted(samples)]
    if not index.is_trained:
        index.train(np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32))
    work = open_storage(work_dir)
    work.write_bytes(TRAINED, faiss.serialize_index(index).tobytes())
    rows = int(sum(len(v) for v in vectors))
    work.write_json(TRAINING, {"rows": rows, "seconds": time.perf_counter() - started})
    return TRAINED


def _read_index(work_dir: str, name: str) -> faiss.Index:
    from seals_al.storage import open_storage

    return faiss.deserialize_index(np.frombuffer(open_storage(work_dir).read_bytes(name), np.uint8))


class EncodeRows(beam.DoFn):
    """(range number, rows, sample rows) -> that range's codes, written into the work folder;
    yields the number. The store is opened once per worker, the trained index read once (it is a
    side input: the name the training step wrote it under)."""

    def __init__(self, store_uri: str, work_dir: str):
        self.store_uri, self.work_dir = store_uri, work_dir
        self.rows = beam.metrics.Metrics.counter("seals", "index_rows_encoded")

    def setup(self) -> None:
        from seals_al.storage import open_storage
        from seals_al.store import EmbeddingStore

        self.store = EmbeddingStore.published(self.store_uri)
        self.out = open_storage(self.work_dir)
        self.index: faiss.Index | None = None

    def process(self, element: tuple[int, bytes, bytes], trained: str) -> Iterator[int]:
        if self.index is None:
            self.index = _read_index(self.work_dir, trained)
        rows = np.frombuffer(element[1], "<i8")
        codes = self.index.sa_encode(np.ascontiguousarray(self.store.vectors(rows), np.float32))
        buffer = io.BytesIO()
        np.save(buffer, codes, allow_pickle=False)
        self.out.write_bytes(_part(element[0]), buffer.getvalue())
        self.rows.inc(len(rows))
        yield element[0]


class EncodedRows:
    """The codes the workers wrote, as indexes: :meth:`filled` is what the one-process build's
    adds make for the same rows."""

    def __init__(self, work_dir: str, row_ids: np.ndarray, chunk_rows: int, progress: bool, seconds: float):
        from seals_al.storage import open_storage

        self.parts, self.row_ids, self.chunk_rows = open_storage(work_dir), row_ids, chunk_rows
        self.progress = progress
        self.seconds = seconds  # the workers' pipeline, wall time
        self.training = self.parts.read_json(TRAINING)
        self.trained = _read_index(work_dir, TRAINED)

    def _codes(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for number in range(start // self.chunk_rows, -(-stop // self.chunk_rows)):
            first = number * self.chunk_rows
            codes = np.load(io.BytesIO(self.parts.read_bytes(_part(number))), allow_pickle=False)
            lo, hi = max(start, first) - first, min(stop, first + len(codes)) - first
            yield codes[lo:hi], self.row_ids[first + lo : first + hi]

    def filled(self, start: int, stop: int, desc: str) -> faiss.Index:
        """A new index holding rows ``start:stop`` (positions in the sorted rows)."""
        index = faiss.deserialize_index(faiss.serialize_index(self.trained))
        ivf = faiss.downcast_index(index)
        # faiss adds codes to fast-scan lists wrongly (its packed blocks): add them to an IVF-PQ
        # twin (the same quantizer and codebooks) and let faiss's conversion pack them.
        twin = _ivfpq_twin(ivf, index) if isinstance(ivf, faiss.IndexIVFPQFastScan) else index
        with tqdm(total=stop - start, desc=desc, unit="vec", disable=not self.progress) as bar:
            for codes, ids in self._codes(start, stop):
                twin.add_sa_codes(codes, ids)
                bar.update(len(ids))
        if twin is index:
            return index
        packed = faiss.IndexIVFPQFastScan(twin)
        packed.nprobe = ivf.nprobe
        packed.referenced_objects = [twin]  # the quantizer is the trained copy's: keep it alive
        return packed


def _ivfpq_twin(fast: faiss.IndexIVFPQFastScan, owner: faiss.Index) -> faiss.IndexIVFPQ:
    """An empty IVF-PQ with the quantizer and codebooks of ``fast`` (which ``owner`` holds)."""
    twin = faiss.IndexIVFPQ(fast.quantizer, fast.d, fast.nlist, fast.pq.M, fast.pq.nbits, fast.metric_type)
    twin.pq = fast.pq
    twin.by_residual = fast.by_residual
    twin.is_trained = True
    twin.referenced_objects = [owner]
    return twin


def encode_with_beam(
    store_uri: str,
    row_ids: np.ndarray,
    dim: int,
    factory: str,
    work_dir: str,
    *,
    train_size: int,
    seed: int,
    chunk_rows: int = CHUNK_ROWS,
    beam_args: Sequence[str] = (),
    test_pipeline: beam.Pipeline | None = None,
    progress: bool = True,
) -> EncodedRows:
    """Train the index and encode ``row_ids`` (sorted) on Beam workers.

    Args:
        store_uri: the published store (gs://, or a folder the workers see).
        row_ids: the rows to index, sorted.
        dim: the store's dimension.
        factory: an IVF factory string (:func:`check_beam_factory`).
        work_dir: an empty folder (or gs:// prefix) every worker can write.
        train_size: rows sampled to train.
        seed: the sampling seed.
        chunk_rows: rows in one element.
        beam_args: Beam pipeline options (default: the in-process FnApiRunner).
        test_pipeline: a pipeline to run on instead (tests).
        progress: progress bars while the driver adds the codes.
    """
    from seals_al.index.build import training_sample

    if chunk_rows < 1:
        raise SealsError(f"chunk_rows must be at least 1, got {chunk_rows}")
    check_beam_factory(dim, factory)
    options = runner_options(beam_args, {"the store": store_uri, "the work folder": work_dir})
    sample = row_ids[training_sample(len(row_ids), train_size, seed)]
    ranges = []
    for number, start in enumerate(range(0, len(row_ids), chunk_rows)):
        rows = row_ids[start : start + chunk_rows]
        inside = sample[(sample >= rows[0]) & (sample <= rows[-1])]
        ranges.append((number, rows.astype("<i8").tobytes(), inside.astype("<i8").tobytes()))
    started = time.perf_counter()
    with test_pipeline or beam.Pipeline(options=options) as p:
        spread = p | "Ranges" >> beam.Create(ranges) | "Spread" >> beam.Reshuffle()
        trained = (
            spread
            | "Sample" >> beam.ParDo(SampleRows(store_uri))
            | "Gather" >> beam.combiners.ToList()
            | "Train" >> beam.Map(train_once, dim, factory, work_dir)
        )
        _ = spread | "Encode" >> beam.ParDo(EncodeRows(store_uri, work_dir), beam.pvalue.AsSingleton(trained))
    return EncodedRows(work_dir, row_ids, chunk_rows, progress, time.perf_counter() - started)
