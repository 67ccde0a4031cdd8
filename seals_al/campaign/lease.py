"""One stage at a time per campaign: a lease held in the LOCK object while a stage runs.

The lease names its holder (a random token, pid, host and pod) and when it expires. The holder
renews it every third of its life while it works, each renewal a compare-and-swap on the object's
version (GCS: if_generation_match; a local disk: under an exclusive flock), so a holder that has
lost the lease finds out. Anyone may take over a lease that has expired (its holder was killed,
OOM-killed or preempted: no renewal came), or one left on this host by a process that is gone, by
the same compare-and-swap: of two processes taking over at once, one wins. Before a round commits
the holder checks that the lease is still its own, so a stage that stalled past its expiry and was
taken over never commits over the new holder's work. Clocks are assumed roughly in step (NTP): the
lease's life (SEALS_LEASE_SECONDS, default 120 s) is far longer than any skew.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from contextlib import suppress

from seals_al.campaign.layout import LOCK
from seals_al.errors import SealsError, shown
from seals_al.storage.base import AlreadyExistsError, ChangedError, Storage

LEASE_SECONDS = 120.0
_TAKEN = "another stage took the lease over, or it was broken (seals-al unlock)"
MAX_LEASE_SECONDS = 86_400.0  # no holder writes a lease longer than a day: one that says so is broken


def lease_seconds() -> float:
    value = os.environ.get("SEALS_LEASE_SECONDS", "")
    try:
        seconds = float(value) if value else LEASE_SECONDS
    except ValueError:
        raise SealsError(f"SEALS_LEASE_SECONDS={value!r}: expected a number of seconds") from None
    if not 0 < seconds <= MAX_LEASE_SECONDS:  # NaN and inf too
        raise SealsError(
            f"SEALS_LEASE_SECONDS={value!r}: must be more than 0 and at most {MAX_LEASE_SECONDS:,.0f} (a day)"
        )
    return seconds


class Lease:
    """Hold the campaign's lease for the duration of a ``with`` block (see the module's doc)."""

    def __init__(
        self,
        storage: Storage,
        seconds: float | None = None,
        *,
        key: str = LOCK,
        busy: str = "stage holds the campaign",
    ):
        """``key``: the object the lease is held in (LOCK: the campaign's own lease); ``busy``:
        what an error says is going on while someone else holds it (after "another ")."""
        self.storage = storage
        self.seconds = seconds or lease_seconds()
        self.key, self.busy = key, busy
        self.mine = {
            "holder": uuid.uuid4().hex,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            # Containers with host networking (and hostNetwork pods) share the host name but not
            # their process ids: a pid is checked only inside the same pid namespace.
            "pids": _pid_namespace(),
            "pod": os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname(),
            "since": time.time(),
        }
        self._token: str | None = None
        self._expires = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    def _record(self) -> tuple[bytes, float]:
        """The lease as written now, and its expiry (which counts once the write succeeded)."""
        expires = time.time() + self.seconds
        return (json.dumps({**self.mine, "expires": expires}, indent=2) + "\n").encode(), expires

    def _create(self) -> None:
        data, expires = self._record()
        self._token = self.storage.create(self.key, data)
        self._expires = expires

    def _swap(self, token: str) -> None:
        data, expires = self._record()
        self._token = self.storage.replace_if(self.key, data, token)
        self._expires = expires

    def __enter__(self) -> Lease:
        try:
            self._create()
        except AlreadyExistsError:
            self._take_over()
        self._renewer = threading.Thread(target=self._renew, name="seals-lease", daemon=True)
        self._renewer.start()
        return self

    def _take_over(self) -> None:
        try:
            raw, token = self.storage.read_versioned(self.key)
        except (ChangedError, SealsError):  # released meanwhile: try once more from the start
            try:
                self._create()
            except AlreadyExistsError:
                raise SealsError(
                    f"{self.storage.where(self.key)}: another stage took the lease at the same moment; "
                    "try again when it ends"
                ) from None
            return
        held = _parse(raw)
        why = self._stale(held)
        if why is None:
            raise SealsError(_busy_message(self.storage.where(self.key), held, self.mine["host"], self.busy))
        try:
            self._swap(token)
        except ChangedError:
            raise SealsError(
                f"{self.storage.where(self.key)}: another stage took over the {why} lease at the same "
                "moment; try again when it ends"
            ) from None

    def _stale(self, held: dict) -> str | None:
        """Why a held lease may be taken over (expired, or its process on this host is gone), or None."""
        expires = _expiry(held, self.seconds)
        if not math.isfinite(expires) or expires > time.time() + MAX_LEASE_SECONDS:
            return "broken"  # no holder writes a lease that never ends: a damaged or forged LOCK
        if time.time() > expires:
            return "expired"
        pid = held.get("pid")
        same_processes = held.get("host") == self.mine["host"] and held.get("pids") == self.mine["pids"]
        if same_processes and isinstance(pid, int) and not _alive(pid):
            return "abandoned"
        return None

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with self._guard:
                if self._lost is not None or self._token is None:
                    return
                try:
                    self._swap(self._token)
                except ChangedError:
                    self._lost = _TAKEN
                    return
                except (OSError, SealsError):  # a hiccup: the next tick tries again; anything else
                    continue  # ends the renewals, the lease expires and check() refuses to commit

    def check(self) -> None:
        """Raise unless the lease is still this process's own and unexpired: called before a
        round commits, so a stage that was taken over, or whose lease was broken
        (:func:`break_lease`), never commits. It renews the lease on storage to know."""
        with self._guard:
            if self._lost is None and time.time() >= self._expires:
                self._lost = "the lease expired before it could be renewed"
            if self._lost is None and self._token is not None:
                try:
                    self._swap(self._token)
                except ChangedError:
                    self._lost = _TAKEN
            if self._lost is not None:
                raise SealsError(f"{self.storage.where(self.key)}: {self._lost}; nothing was committed")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._lost is None and self._token is not None:
            with suppress(SealsError):  # taken over or gone; never mask the stage's own outcome
                self.storage.delete_if(self.key, self._token)


def _expiry(held: dict, seconds: float) -> float:
    """When a held lease expires (one written before leases expired: its start plus ``seconds``);
    inf or NaN when the LOCK says so."""
    expires = held.get("expires")
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        return float(expires)
    since = held.get("since")  # written before leases expired: by its start
    start = since if isinstance(since, int | float) and not isinstance(since, bool) else 0.0
    return float(start) + seconds


def break_lease(storage: Storage) -> str | None:
    """Remove the campaign's lease whoever holds it (``seals-al unlock``), for a lease that would
    otherwise block until it expires. Safe for the campaign's data: a holder that is still running
    finds its lease gone at its next renewal or before it commits, and commits nothing.

    Returns:
        Who held it, or None when nobody did.
    """
    try:
        raw, token = storage.read_versioned(LOCK)
    except (ChangedError, SealsError):
        return None
    held = _describe(_parse(raw))
    try:
        storage.delete_if(LOCK, token)
    except ChangedError:
        raise SealsError(
            f"{storage.where(LOCK)}: the lease changed hands while it was being broken (a stage "
            "renewed or took it); look at `seals-al status` and try again"
        ) from None
    return held


def _parse(raw: bytes) -> dict:
    try:
        held = json.loads(raw)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def _busy_message(where: str, held: dict, host: str, busy: str) -> str:
    since, expires = held.get("since"), held.get("expires")
    age = f" for {_duration(time.time() - since)}" if isinstance(since, int | float) else ""
    left = (
        f", its lease runs {_duration(expires - time.time())} more unless renewed"
        if isinstance(expires, int | float)
        else ""
    )
    elsewhere = "" if held.get("host") == host else " (its process, on another machine, cannot be checked)"
    return (
        f"{where}: another {busy}{age} (pid {held.get('pid')} on {held.get('host')}"
        f"{left}){elsewhere}; try again when it ends: an abandoned lease expires by itself"
    )


def holder(storage: Storage) -> str | None:
    """Who holds the lease, for status; None when nobody does."""
    if not storage.exists(LOCK):
        return None
    try:
        held = _parse(storage.read_bytes(LOCK))
    except SealsError:
        return None
    return _describe(held)


def _describe(held: dict) -> str:
    expires = held.get("expires")
    state = ""
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        left = expires - time.time()
        if not math.isfinite(left) or left > MAX_LEASE_SECONDS:
            state = f", expires {shown(expires)}: broken, any stage may take it over"
        else:
            state = f", expires in {_duration(left)}" if left > 0 else f", expired {_duration(-left)} ago"
    return f"pid {held.get('pid')} on {held.get('host')}{state}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _pid_namespace() -> str:
    """This process's pid namespace ("pid:[4026531836]"), or "" where /proc does not tell."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
