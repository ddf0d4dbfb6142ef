"""scVI through the CLI: train timing, SIGKILL mid-training and resume from the harness's
checkpoint with the uninterrupted hash; per-epoch MLflow metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO

ARGS = [
    "method=scvi",
    "dataset=cells/synthetic",
    "hardware=cpu",
    "hardware.threads=1",
    "dataset.n_cells=400",
    "dataset.n_genes=60",
    "method.max_epochs=30",
    "method.batch_size=64",
    "bench.warmup_steps=3",
]
CHECKPOINT = ["checkpoint.enabled=true", "checkpoint.every_epochs=null", "checkpoint.every_steps=7"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _harness(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m harness <args>`` in ``cwd``, output captured."""
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_hash(tmp_path: Path) -> None:
    plain, resumed = tmp_path / "plain", tmp_path / "resumed"
    plain.mkdir()
    resumed.mkdir()
    args = [*ARGS, "tracking.mlflow=false"]
    whole = _harness(plain, *args)
    assert whole.returncode == 0, whole.stderr
    reference = read_rows(plain / "results" / "results.tsv")[-1]
    assert reference["timing"] == "train" and int(reference["n_runs"]) == 30  # epoch samples
    assert re.search(r"train: min .* over 30 epochs", whole.stdout)

    cmd = [sys.executable, "-m", "harness", *args, *CHECKPOINT]
    ck = resumed / "results" / "checkpoints" / "scvi" / "cells_synthetic__cpu.pt"
    proc = subprocess.Popen(
        cmd, cwd=resumed, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # a few more steps: the kill lands mid-epoch, after a mid-epoch write
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert ck.exists()  # killed mid-training: a completed run removes its checkpoint
    assert not (resumed / "results" / "results.tsv").exists()

    done = _harness(resumed, *args, *CHECKPOINT)
    assert done.returncode == 0, done.stderr
    assert re.search(r"resuming from .*\.pt \(epoch \d+, batch \d+, step \d+\)", done.stdout)
    row = read_rows(resumed / "results" / "results.tsv")[-1]
    assert row["output_hash"] == reference["output_hash"] and not ck.exists()
    assert row["resumed"] and row["resumed"].count("/") == 2  # epoch/batch/step


@pytest.mark.slow
def test_checkpoint_of_other_code_or_config_is_refused(tmp_path: Path) -> None:
    from harness.bench.checkpoint import CheckpointFile

    args = [*ARGS, "tracking.mlflow=false", "method.max_epochs=2", *CHECKPOINT]
    ck = tmp_path / "results" / "checkpoints" / "scvi" / "cells_synthetic__cpu.pt"
    CheckpointFile(ck, key="another-config").save(
        {"step": 5, "epoch": 1, "states": {}, "loader": {}, "extra": {}, "rng": {}}
    )
    done = _harness(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert (
        "written by other code or another config" in done.stdout and "starting fresh" in done.stdout
    )
    ck.parent.mkdir(parents=True, exist_ok=True)
    ck.write_bytes(b"corrupt")
    again = _harness(tmp_path, *args)
    assert again.returncode == 0 and "is unreadable" in again.stdout
    assert read_rows(tmp_path / "results" / "results.tsv")[-1]["resumed"] == ""


@pytest.mark.slow
def test_per_epoch_metrics_in_mlflow(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    done = _harness(tmp_path, *ARGS)
    assert done.returncode == 0, done.stderr
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    elbo = client.get_metric_history(row["mlflow_run_id"], "train/elbo_train")
    assert sorted(m.step for m in elbo) == list(range(1, 31))
    kl = client.get_metric_history(row["mlflow_run_id"], "train/kl_weight")
    assert len(kl) == 30 and max(m.value for m in kl) < 0.1  # 400-epoch warm-up by default
    run = client.get_run(row["mlflow_run_id"])
    assert run.data.metrics["cells_per_s"] > 0 and "truth_latent_r2" in run.data.metrics


def test_bad_keys_fail_fast(tmp_path: Path) -> None:
    for extra, key in (
        (["method.gene_likelihood=poisson"], "method.gene_likelihood"),
        (["dataset=cells/h5ad"], "dataset.path"),
    ):
        proc = _harness(tmp_path, "method=scvi", "hardware=cpu", *extra, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and key in lines[0]
