"""scVI through the CLI: SIGKILL mid-training, resume, same hash; per-epoch MLflow metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.results_tsv import read_rows
from tests.conftest import REPO

ARGS = [
    "method=scvi",
    "dataset=scvi_synthetic",
    "hardware=cpu",
    "hardware.threads=1",
    "dataset.n_cells=400",
    "dataset.n_genes=60",
    "method.max_epochs=30",
    "method.batch_size=64",
    "method.checkpoint=ck/scvi.pt",
    "bench.warmup=1",
    "bench.repeats=1",
]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _harness(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m harness <args>`` in ``cwd``, output captured."""
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_sigkill_then_resume_gives_the_uninterrupted_hash(tmp_path: Path) -> None:
    args = [*ARGS, "tracking.mlflow=false"]
    cmd = [sys.executable, "-m", "harness", *args]
    ck = tmp_path / "ck" / "scvi.pt"
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert ck.exists()  # killed mid-training: a completed run removes its checkpoint
    assert not (tmp_path / "results" / "results.tsv").exists()

    done = _harness(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert re.search(r"resuming from .*scvi\.pt \(epoch [1-9]\d*, step \d+\)", done.stderr)
    hashes = re.findall(r"(warmup|run) 1/1: .* hash ([0-9a-f]{16})", done.stdout)
    assert [kind for kind, _ in hashes] == ["warmup", "run"]
    # the warmup resumed from the checkpoint, the timed run trained uninterrupted from scratch
    assert hashes[0][1] == hashes[1][1]
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    assert row["verdict"] == "none" and row["status"] == "baseline"
    assert row["weights_hash"] == hashes[1][1] and not ck.exists()


@pytest.mark.slow
def test_per_epoch_metrics_in_mlflow(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    args = [a for a in ARGS if not a.startswith("method.checkpoint")]
    done = _harness(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    elbo = client.get_metric_history(row["mlflow_run_id"], "elbo_train")
    assert sorted(m.step for m in elbo) == list(range(30))
    kl = client.get_metric_history(row["mlflow_run_id"], "kl_weight")
    assert len(kl) == 30 and max(m.value for m in kl) < 0.1  # 400-epoch warm-up by default
    run = client.get_run(row["mlflow_run_id"])
    assert run.data.metrics["cells_per_s"] > 0 and "truth_latent_r2" in run.data.metrics


def test_bad_keys_fail_fast(tmp_path: Path) -> None:
    for extra, key in (
        (["method.gene_likelihood=poisson"], "method.gene_likelihood"),
        (["dataset=scvi_h5ad"], "dataset.path"),
    ):
        proc = _harness(tmp_path, "method=scvi", "hardware=cpu", *extra, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and key in lines[0]
