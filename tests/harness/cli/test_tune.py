"""Tuning is gated by correctness, capped at a total trial count, resumable."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest

from harness.sinks.results_tsv import read_rows
from tests.loop.loop_repo import LoopRepo

TUNE = [
    "method=toy",
    "dataset=cells/toy",
    "hardware=cpu",
    "bench.repeats=1",
    "tracking.mlflow=false",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> LoopRepo:
    return LoopRepo(tmp_path_factory.mktemp("tunerepo"))


def _tune(repo: LoopRepo, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo.root)}
    return subprocess.run(
        [sys.executable, "-m", "harness.tune", *TUNE, *args],
        cwd=repo.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_wrong_region_never_best_and_total_count_respected(repo):
    first = _tune(repo, "tune.n_trials=8", "tune.study=s")
    assert first.returncode == 0, first.stderr
    storage = f"sqlite:///{repo.root}/results/optuna.db"
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 8
    wrong = [t for t in study.trials if t.params["speed"] < 3]
    assert all(t.user_attrs["verdict"] == "wrong" for t in wrong)
    assert study.best_trial.params["speed"] >= 3  # the fastest region is infeasible
    tuned = (repo.root / "conf" / "tuned" / "toy" / "cpu.yaml").read_text()
    assert f"speed: {study.best_trial.params['speed']}" in tuned

    resumed = _tune(repo, "tune.n_trials=10", "tune.study=s")
    assert resumed.returncode == 0, resumed.stderr
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 10
    again = _tune(repo, "tune.n_trials=10", "tune.study=s")
    assert (
        again.returncode == 0
        and len(optuna.load_study(study_name="s", storage=storage).trials) == 10
    )

    rows = read_rows(repo.root / "results" / "results.tsv")
    assert {r["tag"] for r in rows} == {"tune:s"}
    # the tuned file composes as an override
    check = subprocess.run(
        [sys.executable, "-m", "harness", *TUNE, "+tuned/toy=cpu", "--cfg", "job"],
        cwd=repo.root,
        env={**os.environ, "PYTHONPATH": str(repo.root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and f"speed: {study.best_trial.params['speed']}" in check.stdout


@pytest.mark.slow  # reads the study the test above tuned
def test_report_plots_a_study(repo):
    from harness.report import main as report_main

    results = repo.root / "results"
    assert report_main([f"paths.results={results}", "study=s"]) == 0
    assert (results / "study-s.png").stat().st_size > 1000
    assert report_main([f"paths.results={results}", "study=nope"]) == 2
