"""Byte ranges of files, read in batches: a local file with positioned reads, an object on gs://
with ranged GETs (docs/ARCHITECTURE.md, "What a round reads").

A step asks for every range it needs at that moment as one batch of requests: a :class:`Source`,
an offset, and a buffer to fill (:func:`read`). A local file answers each request with one
positioned read. An object on gs:// answers with ranged GETs of the JSON API's media download, all
of a batch's GETs in flight at once (up to :data:`CONCURRENCY`), a long request cut into parts of
:data:`PART_BYTES` fetched side by side. Every GET names the object's generation as it was
published, so an object replaced or deleted since then answers 404: an error naming it, never
another version's bytes mixed into this one's. Callers merge nearby ranges themselves
(:attr:`Source.merge_gap`: what a gap is worth reading through rather than asking again), and a
batch over :data:`CONCURRENCY` requests reads through its smallest gaps when that saves a round
trip for little transfer (:func:`fewer_round_trips`).

The GETs go through google-auth's urllib3 transport (Application Default Credentials, refreshed
as needed; none against an emulator, ``STORAGE_EMULATOR_HOST``), not through google-cloud-storage:
a round makes thousands of small GETs, and the library's own download path costs twice the CPU
per request here (about 1 ms against 0.45 ms), which two cores feel.

Each process counts what it fetches from object storage (:func:`stats`): GET requests, bytes, and
the batches they came in. A batch of n GETs costs about ceil(n / concurrency) round trips on real
object storage, so the counts give a modelled time (:meth:`Stats.modelled_seconds`). With
``$SEALS_IO_STATS_DIR`` set, each process writes its counts there as JSON when it exits.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import numpy as np

from seals_al.errors import SealsError

T = TypeVar("T")

CONCURRENCY = int(os.environ.get("SEALS_GCS_CONCURRENCY", "32"))  # GETs in flight at once
PART_BYTES = 8 << 20  # a longer request is fetched as parts of this size, side by side
REMOTE_MERGE_GAP = 32 << 10  # ranges of one object less than this apart: one GET, gap included
# The model of real object storage the counts are judged by (Stats.modelled_seconds): 30 ms to a
# request's first byte, 100 MB/s. A batch over CONCURRENCY requests takes another round trip; a
# gap read through is worth it when it costs at most a tenth of that round trip in transfer.
LATENCY, BANDWIDTH = 0.030, 100e6
ROUND_TRIP_WORTH = int(LATENCY * BANDWIDTH / 10)  # 300 KB
LOCAL_MERGE_GAP = 4096  # a page: one positioned read covers ranges less than this apart
ATTEMPTS = 5  # tries of a GET that failed in a way worth trying again
RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def fewer_round_trips(gaps: np.ndarray, requests: int) -> int:
    """How many of a batch's gaps between requests to read through, the smallest first, so the
    batch takes fewer round trips (ceil(requests / :data:`CONCURRENCY`)): one round trip at a time,
    while the gaps that save it add at most :data:`ROUND_TRIP_WORTH` bytes. ``gaps``: the bytes
    between requests that could be one."""
    smallest = np.cumsum(np.sort(np.asarray(gaps, np.int64)))
    closed = 0
    while requests > CONCURRENCY:
        need = requests - CONCURRENCY * (math.ceil(requests / CONCURRENCY) - 1)  # one round trip fewer
        if closed + need > len(smallest):
            break
        added = smallest[closed + need - 1] - (smallest[closed - 1] if closed else 0)
        if added > ROUND_TRIP_WORTH:
            break
        closed, requests = closed + need, requests - need
    return closed


class ReplacedError(SealsError):
    """An object changed or went away since it was published: reading on would mix versions."""


class Source(ABC):
    """One file's bytes, read by range."""

    where: str  # for messages: a path or gs:// URI
    size: int
    merge_gap: int  # ranges less than this many bytes apart are best read as one
    remote = True  # each request a round trip (a batch's count matters: fewer_round_trips)

    @abstractmethod
    def _fill(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` from ``offset``, alone (no batch)."""

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (one request)."""
        out = bytearray(size)
        read([(self, offset, memoryview(out))])
        return bytes(out)


class LocalFile(Source):
    """A file on this machine's disk."""

    merge_gap = LOCAL_MERGE_GAP
    remote = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.where = str(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise SealsError(f"{path}: no such file") from None
        self.size = os.fstat(self._fd).st_size

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def _fill(self, offset: int, view: memoryview) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:
                raise SealsError(f"{self.where}: truncated (read past its {self.size:,} bytes)")
            done += got


class RemoteObject(Source):
    """One generation of an object on gs://, read with ranged GETs."""

    merge_gap = REMOTE_MERGE_GAP

    def __init__(self, bucket: str, name: str, generation: int, size: int):
        self.bucket, self.name, self.generation, self.size = bucket, name, int(generation), int(size)
        self.where = f"gs://{bucket}/{name}"
        self._url = (
            f"{_endpoint()}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
            f"?alt=media&generation={self.generation}"
        )

    def _fill(self, offset: int, view: memoryview) -> None:
        end = offset + len(view)
        if offset < 0 or end > self.size:
            raise SealsError(f"{self.where}: bytes {offset:,}..{end:,} are outside its {self.size:,} bytes")
        why = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                _back_off(attempt - 1)
            try:
                why = self._get(offset, view)
            except _transient() as e:  # the connection failed or broke off mid-body: again
                why = f"{type(e).__name__}: {e}"
            if not why:
                _STATS.add_request(len(view))
                return
        raise SealsError(
            f"{self.where}: bytes {offset:,}..{end:,} could not be read in {ATTEMPTS} tries ({why})"
        )

    def _get(self, offset: int, view: memoryview) -> str:
        """One GET of the range into ``view``: "" when it was read whole, else why it is worth
        trying again; an answer never worth trying again is an error."""
        end = offset + len(view)
        response = _http().urlopen(
            "GET",
            self._url,
            headers={"Range": f"bytes={offset}-{end - 1}", "Accept-Encoding": "identity"},
            preload_content=False,
            retries=False,
            decode_content=False,
        )
        try:
            if response.status == 404:
                raise ReplacedError(
                    f"{self.where}: generation {self.generation} is gone (the object was replaced "
                    "or deleted since it was published); run again to read what is published now"
                )
            if response.status in (401, 403):
                raise SealsError(f"{self.where}: permission denied (HTTP {response.status})")
            if response.status in RETRIED_STATUS:
                return f"HTTP {response.status}"
            if response.status not in (200, 206):
                raise SealsError(f"{self.where}: HTTP {response.status} reading bytes {offset:,}..{end:,}")
            if response.status == 200 and (offset, end) != (0, self.size):
                raise SealsError(f"{self.where}: the server ignored the byte range asked for")
            got = 0
            while got < len(view):  # readinto may stop short of a large buffer
                more = response.readinto(view[got:])
                if not more:
                    return f"{got:,} of {len(view):,} bytes came"
                got += more
            return ""
        finally:
            response.release_conn()


def _transient() -> tuple[type[BaseException], ...]:
    """What a GET may fail with that is worth trying again: a connection refused, reset or timed
    out, also midway through the body (urllib3's errors, the socket's, google-auth's transport)."""
    import urllib3
    from google.auth.exceptions import TransportError

    return (urllib3.exceptions.HTTPError, OSError, TransportError)


class Parted(Source):
    """One file stored as several objects one after another (a large file published in parts):
    a range is read from the parts it spans."""

    merge_gap = REMOTE_MERGE_GAP

    def __init__(self, parts: Sequence[RemoteObject], where: str):
        self.parts = list(parts)
        self.where = where
        self._starts = np.cumsum([0] + [part.size for part in self.parts])
        self.size = int(self._starts[-1])

    def split(self, offset: int, view: memoryview) -> list[tuple[RemoteObject, int, memoryview]]:
        """The request as requests of the parts it spans."""
        end = offset + len(view)
        if offset < 0 or end > self.size:
            raise SealsError(f"{self.where}: bytes {offset:,}..{end:,} are outside its {self.size:,} bytes")
        out = []
        first = int(np.searchsorted(self._starts, offset, side="right")) - 1
        for n in range(first, len(self.parts)):
            start = int(self._starts[n])
            if start >= end:
                break
            low, high = max(offset, start), min(end, int(self._starts[n + 1]))
            out.append((self.parts[n], low - start, view[low - offset : high - offset]))
        return out

    def _fill(self, offset: int, view: memoryview) -> None:
        read(self.split(offset, view))


Request = tuple[Source, int, memoryview]  # fill the buffer from this offset of the source


def read(requests: Sequence[Request]) -> None:
    """Fill every request's buffer: local ones with one positioned read each, remote ones as one
    batch of concurrent GETs (long ones in parts). Any error is raised after the batch stops."""
    remote: list[tuple[Source, int, memoryview]] = []
    expanded: list[Request] = []
    for source, offset, view in requests:  # a range of a parted file: ranges of its parts
        expanded += (
            source.split(offset, view)
            if isinstance(source, Parted) and len(view)
            else [(source, offset, view)]
        )
    for source, offset, view in expanded:
        if not len(view):
            continue
        if isinstance(source, RemoteObject):
            for start in range(0, len(view), PART_BYTES):  # long requests: parts side by side
                remote.append((source, offset + start, view[start : start + PART_BYTES]))
        else:
            source._fill(offset, view)
    if not remote:
        return
    _STATS.add_batch(len(remote), sum(len(view) for _, _, view in remote))
    if len(remote) == 1 or _in_pool():  # one request, or already on a pool thread: no hand-off
        for source, offset, view in remote:
            source._fill(offset, view)
        return
    futures = [_pool().submit(source._fill, offset, view) for source, offset, view in remote]
    for future in futures:
        future.result()


def concurrently(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run calls that each make requests (google-cloud-storage reads of small objects) at once,
    their results in order; their requests count as one batch."""
    if not calls:
        return []
    sizes: list[int] = []

    def run(call: Callable[[], T]) -> T:
        token = _collecting.set(sizes)
        try:
            return call()
        finally:
            _collecting.reset(token)

    if len(calls) == 1 or _in_pool():
        results = [run(call) for call in calls]
    else:
        futures = [_pool().submit(run, call) for call in calls]
        results = [future.result() for future in futures]
    _STATS.add_batch(len(sizes), sum(sizes))
    return results


def _in_pool() -> bool:
    return threading.current_thread().name.startswith(POOL_PREFIX)


def _back_off(attempt: int) -> None:
    time.sleep(min(8.0, 0.25 * 2**attempt))


# -- the HTTP client and the thread pool, one per process -------------------------------------------
POOL_PREFIX = "seals-gcs"
_lock = threading.Lock()
_client = None
_executor: ThreadPoolExecutor | None = None


def _endpoint() -> str:
    return os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com").rstrip("/")


def _http():
    """google-auth's urllib3 transport with room for :data:`CONCURRENCY` connections."""
    global _client
    with _lock:
        if _client is None:
            import urllib3
            from google.auth.transport.urllib3 import AuthorizedHttp

            pool = urllib3.PoolManager(maxsize=CONCURRENCY, block=True, timeout=urllib3.Timeout(60, 300))
            _client = AuthorizedHttp(_credentials(), http=pool)
        return _client


def _credentials():
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_only"])
    except DefaultCredentialsError as e:
        raise SealsError(
            "gs://: no Google Cloud credentials found (set GOOGLE_APPLICATION_CREDENTIALS, or run "
            "where Application Default Credentials exist, e.g. a pod with Workload Identity)"
        ) from e
    return credentials


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix=POOL_PREFIX)
        return _executor


# -- what a process fetched ---------------------------------------------------------------------------
@dataclass
class Stats:
    """GET requests and bytes fetched from object storage by this process, and the batches they
    came in: ``batches`` holds (requests, bytes) per batch; a request made alone (a small file
    read whole, a listing, an object's metadata) is a batch of one."""

    requests: int = 0
    bytes: int = 0
    batches: list[tuple[int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_request(self, size: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += size

    def add_batch(self, requests: int, size: int) -> None:
        with self._lock:
            self.batches.append((requests, size))

    def add_alone(self, size: int) -> None:
        """A request made on its own, outside a batch (google-cloud-storage's calls)."""
        with self._lock:
            self.requests += 1
            self.bytes += size
            self.batches.append((1, size))

    def modelled_seconds(
        self, latency: float = LATENCY, concurrency: int = 32, bandwidth: float = BANDWIDTH
    ) -> float:
        """What these reads would take on real object storage if every request waited ``latency``
        for its first byte, ``concurrency`` were in flight at once, and bytes came at ``bandwidth``
        per second: batches one after another, each ceil(requests / concurrency) round trips plus
        its bytes' transfer."""
        return sum(math.ceil(n / concurrency) * latency + size / bandwidth for n, size in self.batches)

    def to_json(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "bytes": self.bytes, "batches": list(self.batches)}

    def reset(self) -> None:
        with self._lock:
            self.requests, self.bytes, self.batches = 0, 0, []


_STATS = Stats()


def stats() -> Stats:
    """What this process has fetched from object storage so far."""
    return _STATS


# Inside concurrently(): where the requests made are collected, to be counted as one batch.
_collecting: ContextVar[list[int] | None] = ContextVar("seals_collecting", default=None)


def count_alone(size: int) -> None:
    """Count a GET made outside this module (a whole small object, a listing, metadata): a batch
    of its own, or part of the batch :func:`concurrently` is running."""
    collecting = _collecting.get()
    if collecting is None:
        _STATS.add_alone(size)
    else:
        collecting.append(size)
        _STATS.add_request(size)


def _write_stats() -> None:
    folder = os.environ.get("SEALS_IO_STATS_DIR")
    if not folder:
        return
    record = {"argv": sys.argv, "pid": os.getpid(), **_STATS.to_json()}
    path = Path(folder) / f"{os.getpid()}-{time.time_ns()}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record) + "\n")
    except OSError as e:  # a measurement aid: never fail the command for it
        print(f"warning: {path}: I/O counts not written ({e})", file=sys.stderr)


atexit.register(_write_stats)
