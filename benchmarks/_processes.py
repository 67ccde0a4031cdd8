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


def plot_ways(ways: dict[str, dict], path: Path, title: str) -> None:
    """Each way's wall seconds (and, where measured, the Beam workers' share of them) beside the
    largest peak RSS of its processes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ways)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].barh(names, [ways[w]["seconds"] for w in names], color="#4c72b0", label="whole build")
    if any(ways[w].get("workers_seconds") for w in names):
        workers = [ways[w].get("workers_seconds") or 0 for w in names]
        axes[0].barh(names, workers, color="#55a868", label="of it, the Beam workers")
        axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_xlabel("wall seconds")
    largest = [max([ways[w]["driver_peak_rss_mb"] or 0, *ways[w]["worker_peak_rss_mb"]]) for w in names]
    axes[1].barh(names, largest, color="#dd8452")
    axes[1].set_xlabel("largest process's peak RSS (MB)")
    axes[1].set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
