"""Shared fixtures: run the CLI as a user would, in a scratch directory.

``HARNESS_TEST_BUDGET_S=N`` (CI's slow pass): once the session has run N seconds, the tests not
yet started are skipped, saying so — the slow tests run "if time allows", most important first
(the order of ``SLOW_ORDER``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_STARTED = time.monotonic()
# under a budget, these first: the judge's defences, the engine, the GPU pack, the services
SLOW_ORDER = (
    "tests/loop/",
    "tests/harness/",
    "tests/benchmarks/",
    "tests/slurm/",
    "tests/postgres/",
    "tests/methods/",
    "tests/",
)


def pytest_collection_modifyitems(config, items) -> None:
    if os.environ.get("HARNESS_TEST_BUDGET_S"):
        rank = lambda item: next(  # noqa: E731
            i for i, prefix in enumerate(SLOW_ORDER) if item.nodeid.startswith(prefix)
        )
        items.sort(key=rank)  # stable: each folder keeps its own order


def pytest_runtest_setup(item) -> None:
    budget = os.environ.get("HARNESS_TEST_BUDGET_S")
    if budget and time.monotonic() - _STARTED > float(budget):
        pytest.skip(f"HARNESS_TEST_BUDGET_S={budget} s spent before this test started")


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
