"""Shared fixtures: run the CLI as a user would, in a scratch directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# a small, fast default problem for CLI tests
SMALL = [
    "dataset.n_pixels=300",
    "dataset.n_genes=200",
    "dataset.n_types=4",
    "bench.repeats=2",
]


@pytest.fixture(scope="session")
def table_cache(tmp_path_factory) -> Path:
    """One likelihood-table cache for the whole session (tables take seconds to build)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def harness_cli(tmp_path, table_cache):
    """Run ``python -m harness ARGS`` in ``tmp_path``; returns the CompletedProcess."""

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-m", "harness", f"paths.cache={table_cache}", *args]
        return subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
        )

    return run
