"""Team scale, measured: tune workers on one PostgreSQL study, and a sweep on a tracking server.

    tests/postgres/setup_pg.sh start        # a throw-away PostgreSQL on 127.0.0.1:55432
    python benchmarks/team.py [--reps 3 --workers 4 --trials 24 --jobs 8]

1. ``--reps`` times: ``--workers`` concurrent ``python -m harness.tune`` processes on one fresh
   PostgreSQL database and study (RCTD, 300 pixels, sigma fixed: ~1 s trials) until
   ``--trials``; then checks the study: trial numbers 0..N-1 each exactly once, every trial
   COMPLETE or PRUNED, none RUNNING or FAIL. Reports the per-trial overhead the workers print
   (tune's own figure: wall per trial beyond the method's warm-up and timed runs) beside one
   worker on a sqlite study.
2. ``--jobs`` jobs of a ``submitit_local`` sweep logging to an MLflow tracking server (``mlflow
   server`` on a PostgreSQL backend) vs the same sweep on the default sqlite store (its writes
   serialised by the harness's file lock): wall time of each and runs complete.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("HARNESS_PG_PORT", "55432"))
TUNE = ["method=rctd", "dataset.n_pixels=300", "method.sigma_override=100", "hardware=cpu",
        "hardware.threads=1", "bench.repeats=2", "tracking.mlflow=false", "tune.write=false"]  # fmt: skip


def database(prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    dsn = f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{PORT}/{name}"


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def tune_workers(
    n: int, storage: str, study: str, trials: int, cwd: Path
) -> tuple[float, list[float]]:
    """Run ``n`` workers to ``trials``; (wall s, each worker's per-trial overhead)."""
    cmd = [sys.executable, "-m", "harness.tune", *TUNE, f"tune.storage={storage}",
           f"tune.study={study}", f"tune.n_trials={trials}"]  # fmt: skip
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(n)]  # fmt: skip
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit("a tune worker failed:\n" + "\n".join(o[-2000:] for o in outs))
    overheads = [float(m) for o in outs for m in re.findall(r"overhead .*?median ([0-9.]+) s", o)]
    return wall, overheads


def check_study(storage: str, study: str, trials: int) -> str:
    import optuna

    s = optuna.load_study(study_name=study, storage=storage)
    numbers = sorted(t.number for t in s.trials)
    states = {}
    for t in s.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    ok = numbers == list(range(trials)) and set(states) <= {"COMPLETE", "PRUNED"}
    return f"{'ok' if ok else 'WRONG'}: {len(numbers)} trials, numbers 0..{numbers[-1]}, {states}"


def server(backend: str, artifacts: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "2"]  # fmt: skip
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                  "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    proc = subprocess.Popen(cmd, env=server_env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    for _ in range(180):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(2)
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow server did not start: {log.read_text()[-2000:]}")


def sweep(jobs: int, tracking: list[str], cwd: Path) -> float:
    seeds = ",".join(str(i) for i in range(1, jobs + 1))
    cmd = [sys.executable, "-m", "harness", "-m", "method=rctd", "dataset.n_pixels=300",
           "method.sigma_override=100", "hardware=cpu", "hardware.threads=1", "bench.repeats=1",
           "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
           f"dataset.seed={seeds}", *tracking]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stderr[-3000:]}")
    return wall


def runs_finished(uri: str) -> int:
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    exps = client.search_experiments()
    return sum(
        r.info.status == "FINISHED"
        for e in exps
        for r in client.search_runs([e.experiment_id], max_results=1000)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--parts", default="tune,sweep", help="tune and/or sweep")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="harness-team-"))
    print(f"work dir {work}")
    for rep in range(1, a.reps + 1 if "tune" in a.parts else 1):
        url = database("optuna")
        wall, over = tune_workers(a.workers, url, f"team{rep}", a.trials, work)
        print(f"PostgreSQL rep {rep}: {a.workers} workers, {a.trials} trials in {wall:.1f} s; "
              f"{check_study(url, f'team{rep}', a.trials)}; per-trial overhead (each worker's "
              f"median) {', '.join(f'{o:.3f}' for o in over)} s", flush=True)  # fmt: skip
    if "tune" in a.parts:
        one_worker(a, work)
    if "sweep" in a.parts:
        sweeps(a, work)


def one_worker(a: argparse.Namespace, work: Path) -> None:
    lite = f"sqlite:///{work}/optuna-one.db"
    wall, over = tune_workers(1, lite, "one", a.trials, work)
    print(f"sqlite, one worker: {a.trials} trials in {wall:.1f} s; "
          f"{check_study(lite, 'one', a.trials)}; per-trial overhead {over[0]:.3f} s", flush=True)  # fmt: skip


def sweeps(a: argparse.Namespace, work: Path) -> None:
    proc, uri = server(database("mlflow"), work / "artifacts", work / "server.log")
    try:
        wall_server = sweep(a.jobs, [f"tracking.uri={uri}"], work)
        done_server = runs_finished(uri)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    lite_uri = f"sqlite:///{work}/mlflow-sweep.db"
    wall_lite = sweep(a.jobs, [f"tracking.uri={lite_uri}"], work)
    done_lite = runs_finished(lite_uri)
    print(f"{a.jobs} concurrent jobs: tracking server {wall_server:.1f} s ({done_server} runs "
          f"FINISHED) vs locked sqlite {wall_lite:.1f} s ({done_lite} FINISHED), "
          f"ratio {wall_server / wall_lite:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
