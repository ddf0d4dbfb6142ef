"""Memory of processes and devices, measured from outside (``/proc``, ``nvidia-smi``): what
bounds the loop's pool of warm workers."""

from __future__ import annotations

import shutil
import subprocess

from harness.optimize.workers import descendants


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants (``VmRSS``; 0 where unreadable)."""
    total = 0
    for p in (pid, *descendants(pid)):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def device_memory_bytes() -> dict[int, int]:
    """Device memory per process on the machine's NVIDIA GPUs, as the driver accounts it
    (``nvidia-smi``); empty without one."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    used: dict[int, int] = {}
    for line in out.splitlines():
        try:
            pid, mib = (int(v) for v in line.split(","))
        except ValueError:
            continue
        used[pid] = used.get(pid, 0) + mib * 2**20
    return used


def available_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo (0 where unreadable)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def device_total_bytes() -> int:
    """Memory of the first NVIDIA device (``nvidia-smi``; 0 without one)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return int(out.split()[0]) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0
