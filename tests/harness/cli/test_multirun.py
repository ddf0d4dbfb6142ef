"""Hydra multirun: one row and one MLflow run per job, all tagged with one sweep id; a failed
job does not stop the others; concurrent jobs share one sqlite MLflow store safely."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO, SMALL

SWEEPS = REPO / "conf" / "sweep"


@pytest.fixture
def multirun(tmp_path, table_cache):
    """Run ``python -m harness -m ARGS`` in ``tmp_path`` (the harness_cli fixture, multirun)."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("HARNESS_SWEEP_ID", None)
        cmd = [sys.executable, "-m", "harness", "-m", f"paths.cache={table_cache}", *args]
        return subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
        )

    return run


def _sweep_ids(rows: list[dict[str, str]]) -> set[str]:
    return {t.removeprefix("sweep:") for r in rows for t in r["tag"].split() if "sweep:" in t}


def _mlflow_runs(results: Path):
    mlflow = pytest.importorskip("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{results}/mlflow.db")
    return mlflow.search_runs(experiment_names=["rctd"])


@pytest.mark.slow
def test_sweep_jobs_share_one_sweep_id_in_rows_and_mlflow(multirun, tmp_path):
    # a preset, narrowed on the command line to two cheap jobs
    proc = multirun(
        "+sweep=rctd_batch",
        "hardware=cpu",
        *SMALL,
        "bench.repeats=1",
        "hardware.dtype=float64",
        "method.batch_size=150,300",
        "run.tag=t1",
    )
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "results" / "results.tsv")
    assert len(rows) == 2
    assert [("method.batch_size=150" in r["overrides"]) for r in rows] == [True, False]
    (sweep,) = _sweep_ids(rows)  # one id for both jobs, named after the preset
    assert sweep.startswith("rctd_batch-")
    assert all(r["tag"] == f"t1 sweep:{sweep}" for r in rows)
    assert rows[1]["verdict"] == "exact"  # the batch size does not change the weights
    runs = _mlflow_runs(tmp_path / "results")
    assert len(runs) == 2 and set(runs["tags.sweep_id"]) == {sweep}
    assert set(runs["tags.tag"]) == {"t1"}
    assert set(runs["params.method.batch_size"]) == {"150", "300"}
    # the end of the sweep: one table of its jobs (swept values, verdict, time, quality), its id
    table = proc.stdout[proc.stdout.index(f"sweep {sweep}: 2 job(s)") :]
    assert f"sweep id: {sweep}" in table and "truth_dominant_accuracy" in table
    head, one, two = table.splitlines()[1:4]
    assert head.split()[:5] == ["#", "batch_size", "status", "verdict", "elapsed_s"]
    assert one.split()[:4] == ["1", "150", "baseline", "none"]
    assert two.split()[:4] == ["2", "300", "run", "exact"]


@pytest.mark.slow
def test_failed_jobs_do_not_stop_the_sweep_and_keep_their_rows(multirun, tmp_path):
    # job 0: an invalid value (error, nothing written); job 1 runs, but MLflow cannot write:
    # a clear error, and the row is still there
    (tmp_path / "not_a_dir").write_text("")
    uri = f"sqlite:///{tmp_path}/not_a_dir/mlflow.db"
    proc = multirun(
        "hardware=cpu", *SMALL, "bench.repeats=1", f"tracking.uri={uri}", "method.batch_size=0,300"
    )
    assert proc.returncode == 2  # the first failure decides the exit status
    assert "error: config method.batch_size=0: must be >= 1" in proc.stderr
    assert "MLflow logging" in proc.stderr and "row is written" in proc.stderr
    (row,) = read_rows(tmp_path / "results" / "results.tsv")
    assert "method.batch_size=300" in row["overrides"]
    assert row["mlflow_run_id"] == "" and row["status"] == "baseline"
    assert f"MLflow logging to {uri} failed" in row["description"]
    assert "job(s) recorded" in proc.stdout and "sweep id: " in proc.stdout  # still summarised


@pytest.mark.slow
def test_single_run_joins_a_sweep_through_the_environment(harness_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_SWEEP_ID", "study7")
    proc = harness_cli("hardware=cpu", *SMALL, "bench.repeats=1", "tracking.mlflow=false")
    assert proc.returncode == 0, proc.stderr
    assert read_rows(tmp_path / "results" / "results.tsv")[-1]["tag"] == "sweep:study7"


def test_sqlite_writer_lock_serialises_and_times_out(tmp_path):
    from harness.core.fsio import locked
    from harness.sinks.record import sqlite_lock_path

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    lock = sqlite_lock_path(uri)
    events: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with locked(lock):
            held.set()
            time.sleep(0.5)
            events.append("first done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with pytest.raises(TimeoutError, match="mlflow.db.lock"), locked(lock, 0.1):
        pass
    with locked(lock):
        events.append("second")
    thread.join()
    assert events == ["first done", "second"]
    assert sqlite_lock_path("http://tracking.example:5000") is None  # servers need no lock


def _preset_jobs(name: str) -> list[list[str]]:
    """The job overrides a preset's sweeper params expand to (comma lists only)."""
    params = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    axes = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_every_job_of_every_sweep_preset_is_a_valid_config(name):
    from harness.config.compose import compose_checked

    jobs = _preset_jobs(name)
    assert len(jobs) >= 2
    for job in jobs:
        cfg, valid = compose_checked([f"+sweep={name}", "hardware=cpu", *job])
        assert valid.method.name in name  # rctd_* sweeps rctd, scvi_* scvi


def test_launcher_presets_pick_resources_by_hardware(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HARNESS_SLURM_PARTITION": "gpu"}

    def launcher(hw: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "hydra/launcher=slurm", f"hardware={hw}"]
            + ["--cfg", "hydra", "-p", "hydra.launcher"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return yaml.safe_load(proc.stdout)

    l40s, cpu = launcher("l40s"), launcher("cpu")
    assert l40s["_target_"].endswith("SlurmLauncher")
    assert (l40s["gpus_per_node"], l40s["constraint"]) == (1, "l40s")
    assert (cpu["gpus_per_node"], cpu["constraint"]) == (None, None)
    hardware = {p.stem for p in (REPO / "conf" / "hardware").glob("*.yaml")}
    presets = {p.stem for p in (REPO / "conf" / "hydra" / "launcher" / "slurm_hw").glob("*.yaml")}
    assert hardware <= presets, f"no SLURM resources for hardware {hardware - presets}"


@pytest.mark.slow
def test_submitit_local_concurrent_jobs_share_a_new_sqlite_store(multirun, tmp_path):
    # three jobs in three processes at once, on a results dir with no mlflow.db yet
    proc = multirun(
        "hydra/launcher=submitit_local",
        "hardware=cpu",
        *SMALL,
        "method.batch_size=100,150,300",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "results" / "results.tsv")
    assert len(rows) == 3 and all(r["mlflow_run_id"] for r in rows)
    runs = _mlflow_runs(tmp_path / "results")
    assert set(runs["run_id"]) == {r["mlflow_run_id"] for r in rows}
    assert len(set(runs["tags.sweep_id"])) == 1
