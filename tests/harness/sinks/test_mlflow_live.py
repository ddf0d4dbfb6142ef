"""MLflow runs that are pleasant to compare: real start/end times, telling names, the runs
table as the experiment's landing page; trainers' runs open while they train and end
FINISHED, FAILED (a crash) or KILLED (a timeout) with the epochs done so far."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO

mlflow = pytest.importorskip("mlflow")
FIXTURES = f"hydra.searchpath=[file://{REPO}/tests/fixtures/conf]"
TOY = [FIXTURES, "method=toytrain", "hardware=cpu", "tracking.live_interval_s=0.5"]


def _harness(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _run(tmp_path: Path):
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    return row, client, client.get_run(row["mlflow_run_id"])


@pytest.mark.slow
def test_finished_run_has_real_times_a_name_and_the_runs_table(tmp_path):
    proc = _harness(tmp_path, *TOY, "method.sleep_s=0.01")
    assert proc.returncode == 0, proc.stderr
    row, client, run = _run(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("toytrain · cells/toycells · cpu · ")
    duration = (run.info.end_time - run.info.start_time) / 1000
    assert duration >= float(row["elapsed_s"])  # the benchmark's wall time, not logging time
    assert run.data.metrics["elapsed_s"] == pytest.approx(float(row["elapsed_s"]), rel=1e-4)
    history = client.get_metric_history(run.info.run_id, "fit/loss")
    assert sorted(m.step for m in history) == list(range(1, 7))  # streamed once per epoch
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_crash_mid_training_ends_failed_with_the_epochs_so_far(tmp_path):
    proc = _harness(tmp_path, *TOY, "method.sleep_s=0.05", "method.fail_at_epoch=4")
    assert proc.returncode != 0
    row, client, run = _run(tmp_path)
    assert row["status"] == "crash" and run.info.status == "FAILED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "fit/loss"))
    assert steps == [1, 2, 3]
    assert any(a.path == "run.log" for a in client.list_artifacts(run.info.run_id))


@pytest.mark.slow
def test_timeout_mid_training_ends_killed_with_the_epochs_so_far(tmp_path):
    # the watchdog's clock starts before data, warm-up and the MLflow store's creation (seconds
    # on a loaded CI machine): 20 s leaves room for epochs on any machine, 1000 x 0.05 s overruns it
    args = ["method.sleep_s=0.05", "method.epochs=1000", "bench.timeout_s=20"]
    proc = _harness(tmp_path, *TOY, *args)
    assert proc.returncode == 124
    row, client, run = _run(tmp_path)
    assert row["status"] == "timeout" and run.info.status == "KILLED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "fit/loss")]
    assert 1 <= len(steps) < 1000
