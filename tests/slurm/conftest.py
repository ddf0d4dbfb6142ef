"""A running SLURM cluster for the integration tests, or a skip that says why there is none.

CI starts the cluster before pytest (tests/slurm/setup_cluster.sh start). Run locally as root:
``tests/slurm/setup_cluster.sh start`` once (installs slurm-wlm + munge with apt), then
``python -m pytest -m slurm``; or leave it down: a root session with the packages installed
starts it for the tests and stops it (by PID) afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SETUP = HERE / "setup_cluster.sh"
STATE = Path(os.environ.get("HARNESS_SLURM_STATE", "/tmp/harness-slurm"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: needs a running SLURM cluster (tests/slurm/setup_cluster.sh start)"
    )


def _node_state() -> str:
    if not shutil.which("sinfo"):
        return ""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=5
        ).stdout
    except subprocess.TimeoutExpired:
        return ""
    return out.split()[0] if out.split() else ""


def _why_down() -> str:
    status = STATE / "status"
    recorded = status.read_text().strip() if status.exists() else "setup_cluster.sh never ran"
    return f"no SLURM cluster ({recorded}); start one with: sudo {SETUP.relative_to(HERE.parents[1])} start"


@pytest.fixture(scope="session")
def slurm_cluster():
    """Yields when a cluster answers with a usable node; skips (reason printed) otherwise."""
    started = False
    if not _node_state().startswith(("idle", "mix", "alloc")):
        can_start = os.geteuid() == 0 and Path("/usr/sbin/slurmctld").exists()
        if not can_start:
            pytest.skip(_why_down())
        proc = subprocess.run(
            [str(SETUP), "start", "--no-install"], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:  # its reason is in the status file
            pytest.skip(_why_down())
        started = True
    yield
    if started:
        subprocess.run([str(SETUP), "stop"], capture_output=True, text=True, timeout=60)
