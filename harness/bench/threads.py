"""One thread budget for every pool a run uses: torch intra-/inter-op, BLAS/OpenMP (through
threadpoolctl) and numba.

The default budget is the CPUs this process may really use — its affinity mask (``taskset``,
SLURM's ``--cpus-per-task``) capped by a cgroup CPU quota (containers, systemd) — not
``os.cpu_count()``, which counts the machine's cores whatever share of them the job was given.
Pools sized above the CPUs a job has oversubscribe them: measured beside a busy 2-process job on
the 2-core VM, scVI's 100 epochs took 16.5× their quiet time with torch's default threads.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any

_ENV_POOLS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_LIMITS: list[Any] = []  # threadpoolctl limits in force (kept alive for the process)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_*``); None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup quota (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def apply_budget(threads: int) -> dict[str, Any]:
    """Size every pool to ``threads`` (0: :func:`available_cpus`); returns each pool's size.

    Environment variables are set too, for libraries loaded later and for child processes (a
    data loader's workers)."""
    import torch

    n = threads if threads > 0 else available_cpus()
    for name in _ENV_POOLS:
        if name != "NUMBA_NUM_THREADS" or "numba" not in sys.modules:  # numba refuses a change
            os.environ[name] = str(n)  # once its pool runs; set_num_threads below instead
    torch.set_num_threads(n)
    # only before torch's first parallel work; a second run in this process keeps it
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)
    from threadpoolctl import threadpool_info, threadpool_limits

    _LIMITS.clear()
    _LIMITS.append(threadpool_limits(limits=n))
    pools: dict[str, Any] = {
        "threads_budget": n,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    for lib in threadpool_info():
        key = f"{lib.get('user_api', 'pool')}_{lib.get('internal_api', '')}_threads"
        pools[key] = max(int(lib.get("num_threads", 0)), pools.get(key, 0))
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        pools["numba_threads"] = numba.get_num_threads()
    return pools
