"""One stage at a time per campaign: a lease held in the LOCK object while a stage runs."""

from __future__ import annotations

import os
import socket
import time

from seals_al.campaign.layout import LOCK
from seals_al.errors import SealsError
from seals_al.storage import AlreadyExistsError, Storage


class Lease:
    """LOCK is written once; a lock left by a dead process on this host is taken over, a live one
    makes the second stage fail clearly."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}

    def __enter__(self) -> Lease:
        try:
            self.storage.write_json(LOCK, self.mine, once=True)
        except AlreadyExistsError:
            holder = self.storage.read_json(LOCK)
            if holder.get("host") == self.mine["host"] and not _alive(int(holder.get("pid", -1))):
                self.storage.write_json(LOCK, self.mine)  # the holder died mid-round: take over
            else:
                where = self.storage.where(LOCK)
                since = holder.get("since")
                age = f" for {_duration(time.time() - since)}" if isinstance(since, int | float) else ""
                same_host = holder.get("host") == self.mine["host"]
                gone = (
                    ""
                    if same_host
                    else (
                        f"; if that process is gone (a stopped pod or machine), delete {where} and run again"
                    )
                )
                raise SealsError(
                    f"{where}: another stage holds the campaign{age} (pid {holder.get('pid')} on "
                    f"{holder.get('host')}); try again when it ends{gone}"
                ) from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            holder = self.storage.read_json(LOCK)
        except SealsError:
            return  # already gone; never mask the round's own outcome
        if holder.get("pid") == self.mine["pid"] and holder.get("host") == self.mine["host"]:
            self.storage.delete(LOCK)


def holder(storage: Storage) -> str | None:
    """Who holds the lease, for status; None when nobody does."""
    if not storage.exists(LOCK):
        return None
    held = storage.read_json(LOCK)
    return f"pid {held.get('pid')} on {held.get('host')}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


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
