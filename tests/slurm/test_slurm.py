"""Against a real SLURM cluster: sbatch/bench.sbatch writes its row, and a multirun through the
SLURM launcher preset writes one row per job (one sweep id). Skipped, with the reason, when no
cluster runs here (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO, SMALL

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# the test node is small: one CPU and 1 GB per job, whatever the presets ask for
FIT = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


@pytest.fixture
def env() -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HARNESS_REPO": str(REPO),
        "HARNESS_PYTHON": sys.executable,
        "HYDRA_FULL_ERROR": "0",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("HARNESS_SWEEP_ID", None)
    return env


def _job_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_bench_sbatch_writes_its_row(tmp_path, table_cache, env):
    results = tmp_path / "results"
    log = tmp_path / "bench-%j.out"
    cmd = ["sbatch", "--parsable", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=1G"]
    cmd += [f"--output={log}", str(REPO / "sbatch" / "bench.sbatch")]
    cmd += ["hardware=cpu", *SMALL, f"paths.results={results}", f"paths.cache={table_cache}"]
    t0 = time.monotonic()
    sub = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    tsv = results / "results.tsv"
    while not read_rows(tsv):
        if time.monotonic() - t0 > 300 or (time.monotonic() - t0 > 5 and not _job_state(job)):
            text = Path(str(log).replace("%j", job))
            pytest.fail(f"job {job}: no row; log:\n{text.read_text() if text.exists() else '-'}")
        time.sleep(0.2)
    print(f"\nbench.sbatch: submit -> row {time.monotonic() - t0:.1f} s")
    (row,) = read_rows(tsv)
    assert (row["hardware"], row["status"], row["verdict"]) == ("cpu", "baseline", "none")
    assert row["commit"] and float(row["elapsed_s"]) > 0
    for _ in range(50):  # the job log is complete once the job has left the queue
        if not _job_state(job):
            break
        time.sleep(0.2)
    text = Path(str(log).replace("%j", job)).read_text()
    for header in ("== harness bench.sbatch", "node:", "commit:", "nvidia-smi", "harness summary"):
        assert header in text, text


@pytest.mark.slow
def test_multirun_through_the_slurm_launcher_preset(tmp_path, table_cache, env):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness", "-m", "hydra/launcher=slurm", "hardware=cpu", *FIT]
    cmd += [*SMALL, "bench.repeats=1", "method.batch_size=150,300"]
    cmd += [f"paths.results={results}", f"paths.cache={table_cache}"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"\n2-job sweep through SLURM: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_rows(results / "results.tsv")
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"baseline", "run"}
    tags = {r["tag"] for r in rows}
    assert len(tags) == 1 and tags.pop().startswith("sweep:")
    assert all(r["mlflow_run_id"] for r in rows)
    logs = list(results.glob("hydra/multirun/*/*/.submitit/*/*_log.out"))
    assert len(logs) == 2  # one job array, two tasks, each logging its node from the preset
    assert all("harness job" in p.read_text() for p in logs)

    mlflow = pytest.importorskip("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{results}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["rctd"])
    assert set(runs["run_id"]) == {r["mlflow_run_id"] for r in rows}
    assert len(set(runs["tags.sweep_id"])) == 1


def test_gpu_preset_requests_a_gpu_node(tmp_path, table_cache, env):
    # the test cluster's node has two fake GPUs and the hardware names as features: the l40s
    # preset's job array is accepted, runs with a GPU granted, and the harness then reports
    # that there is no real CUDA device behind it
    node = subprocess.run(["sinfo", "-h", "-o", "%f %G"], capture_output=True, text=True)
    if "l40s" not in node.stdout or "gpu" not in node.stdout:
        pytest.skip(f"node has no l40s feature and gpu gres ({node.stdout.strip()})")
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness", "-m", "hydra/launcher=slurm", "hardware=l40s", *FIT]
    cmd += [*SMALL, "tracking.mlflow=false", f"paths.results={results}"]
    cmd += [f"paths.cache={table_cache}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:  # a real L40S node
        return
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "hardware=l40s: needs CUDA" in proc.stderr
    (log,) = results.glob("hydra/multirun/*/*/.submitit/*/*_log.out")
    assert "CUDA_VISIBLE_DEVICES=0" in log.read_text()
