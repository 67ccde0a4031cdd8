"""Measuring a command in a fresh process and the processes it starts (Beam's worker processes):
wall seconds and each process's peak RSS (VmHWM), read every 0.2 s while it runs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path


def _family(root: int) -> dict[int, str]:
    """The live descendants of ``root`` (and itself): pid -> command line."""
    parent, command = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    return {pid: command.get(pid, "") for pid in family}


def _peak_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def measure_processes(args: list[str], env: dict[str, str], label: str) -> dict:
    """Run ``args`` in a fresh process: its wall seconds and the peak RSS of the driver (that
    process) and of each Beam worker (the Python processes of Beam's SDK harness it starts)."""
    started = time.perf_counter()
    child = subprocess.Popen(args, env=env)
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid, command in _family(child.pid).items():
                peak = _peak_mb(pid)
                if peak is not None:
                    # A worker is the Python process of Beam's SDK harness (not a shell wrapping it).
                    python = command.split(" ", 1)[0].rsplit("/", 1)[-1].startswith("python")
                    worker = python and "sdk_worker" in command
                    role = "driver" if pid == child.pid else ("worker" if worker else "other")
                    peaks[pid] = (role, max(peak, peaks.get(pid, ("", 0.0))[1]))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = child.wait()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"{label}: exit {code}")
    workers = [mb for role, mb in peaks.values() if role == "worker"]
    return {
        "seconds": seconds,
        "driver_peak_rss_mb": max((mb for role, mb in peaks.values() if role == "driver"), default=None),
        "worker_peak_rss_mb": workers,
        "processes": len(peaks),
    }
