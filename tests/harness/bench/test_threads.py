"""One thread budget: the CPUs this process may use, applied to every pool."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.bench.threads import _cgroup_quota, available_cpus


def test_cgroup_quota_caps_the_budget(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1) == 1


def test_taskset_allocation_sizes_every_pool(tmp_path):
    """A run started under ``taskset -c 0`` gets one thread in torch, BLAS/OpenMP and numba,
    with the default ``hardware.threads=0``, and records the pools in its fingerprint."""
    import shutil

    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed")
    code = (
        "import numba, torch\n"
        "from harness.bench.threads import apply_budget\n"
        "pools = apply_budget(0)\n"
        "assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1, pools\n"
        "assert all(v == 1 for v in pools.values()), pools\n"
        "print('ok', pools)\n"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr


def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise():
    code = "import harness, os; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "30000", out.stderr
    env["GOMP_SPINCOUNT"] = "7"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "7", out.stderr
