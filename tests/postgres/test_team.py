"""Team scale on a real PostgreSQL: many tune workers on one Optuna study (exact totals, a
killed worker's trial failed and re-run), and an MLflow tracking server shared by a parallel
sweep (and going away mid-sweep without losing a results.tsv row)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from harness.sinks.results_tsv import read_rows
from tests.loop.loop_repo import LoopRepo

TUNE = ["method=toy", "dataset=cells/toy", "hardware=cpu", "bench.repeats=3",
        "tracking.mlflow=false"]  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> LoopRepo:
    return LoopRepo(tmp_path_factory.mktemp("teamrepo"))


def _env(repo: LoopRepo) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(repo.root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _workers(repo: LoopRepo, n: int, *args: str) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "harness.tune", *TUNE, *args]
    return [
        subprocess.Popen(
            cmd,
            cwd=repo.root,
            env=_env(repo),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(n)
    ]


def _states(storage: str, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=storage)
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.slow
def test_four_tune_workers_reach_exactly_the_total(repo, postgres):
    url = postgres.create_database("optuna")
    procs = _workers(repo, 4, f"tune.storage={url}", "tune.study=team", "tune.n_trials=24")
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    states = _states(url, "team")
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 24, states
    assert "RUNNING" not in states and "FAIL" not in states
    assert sum("wrote " in o for o in outs) == 1  # the best parameters, written once


@pytest.mark.slow
def test_a_killed_worker_leaves_a_failed_trial_and_the_total_is_still_reached(repo, postgres):
    url = postgres.create_database("optuna")
    procs = _workers(repo, 3, f"tune.storage={url}", "tune.study=kill", "tune.n_trials=16",
                     "bench.repeats=8")  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _states(url, "kill").get("COMPLETE", 0) >= 2:
                break
        except KeyError:
            pass
        time.sleep(0.2)
    procs[0].send_signal(signal.SIGKILL)  # mid-trial: its trial stops beating
    for p in procs[1:]:
        p.communicate(timeout=600)
    assert all(p.returncode == 0 for p in procs[1:])
    states = _states(url, "kill")
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 16, states
    assert states.get("FAIL", 0) == 1 and "RUNNING" not in states


@pytest.mark.slow
def test_sqlite_concurrent_workers_reach_the_total_too(repo):
    url = f"sqlite:///{repo.root}/results/optuna-team.db"
    procs = _workers(repo, 3, f"tune.storage={url}", "tune.study=lite", "tune.n_trials=12")
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    states = _states(url, "lite")
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 12 and "RUNNING" not in states


# ---- MLflow tracking server ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(backend: str, artifacts: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(2)  # the app finishes starting after the socket opens
                return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"mlflow server did not start: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_parallel_sweep_on_a_tracking_server(repo, postgres, tmp_path):
    port = _free_port()
    server = _server(postgres.create_database("mlflow"), tmp_path / "artifacts", port,
                     tmp_path / "server.log")  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        cmd = [sys.executable, "-m", "harness", "-m", "method=toy", "hardware=cpu",
               "bench.repeats=1", f"tracking.uri={uri}", "hydra/launcher=submitit_local",
               "hydra.launcher.timeout_min=10", "dataset.seed=1,2,3,4,5,6,7,8"]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=repo.root, env=_env(repo), capture_output=True, text=True,
                              timeout=900)  # fmt: skip
        wall = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [  # (Hydra writes the override escaped: http\://127.0.0.1\:PORT)
            r
            for r in read_rows(repo.root / "results" / "results.tsv")
            if f"127.0.0.1\\:{port}" in r["overrides"]
        ]
        assert len(rows) == 8 and all(r["mlflow_run_id"] for r in rows)
        import mlflow

        client = mlflow.tracking.MlflowClient(uri)
        runs = [client.get_run(r["mlflow_run_id"]) for r in rows]
        assert all(r.info.status == "FINISHED" and "elapsed_s" in r.data.metrics for r in runs)
        assert all(r.data.params["dataset.seed"] and r.data.tags["output_hash"] for r in runs)
        assert all(client.list_artifacts(r.info.run_id) for r in runs)
        print(f"8 jobs on the tracking server: {wall:.1f} s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # the server is gone: a job fails with one line naming the URI, its row is still written
    gone = subprocess.run(
        [sys.executable, "-m", "harness", "method=toy", "hardware=cpu", "bench.repeats=1",
         f"tracking.uri={uri}"],
        cwd=repo.root, capture_output=True, text=True, timeout=300,
        env={**_env(repo), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )  # fmt: skip
    assert gone.returncode != 0
    errors = [line for line in gone.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and uri in errors[0], gone.stderr
    last = read_rows(repo.root / "results" / "results.tsv")[-1]
    assert last["mlflow_run_id"] == "" and "MLflow logging" in last["description"]
