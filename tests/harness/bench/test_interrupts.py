"""Stopped runs leave no stuck state: SIGTERM mid-training → a ``killed`` row, the MLflow run
KILLED, no half-written output; a SIGKILLed run's RUNNING MLflow run is ended FAILED by the
next run; a run whose logging failed ends FAILED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.fsio import atomic_path
from harness.core.signals import Interrupted, catch_interrupts
from harness.sinks.results_tsv import read_rows

REPO = Path(__file__).resolve().parents[3]
LONG_SCVI = ["method=scvi", "hardware=cpu", "hardware.threads=1", "dataset.n_cells=300",
             "dataset.n_genes=60", "method.max_epochs=100000", "bench.warmup_steps=2",
             "run.output=out.h5ad"]  # fmt: skip


def _start(cwd: Path, uri: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-u", "-m", "harness", *LONG_SCVI, f"tracking.uri={uri}"]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_training(proc: subprocess.Popen, timeout: float = 240) -> str:
    """Read the output until the timed training has run a few epochs."""
    seen, deadline = [], time.monotonic() + timeout
    timed = False
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        timed = timed or "timed training" in line
        if timed and "train epoch 1/" in line:
            time.sleep(1)  # a few epochs into the timed training
            return "".join(seen)
    proc.kill()
    raise AssertionError("training never started:\n" + "".join(seen[-30:]))


def _runs(uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id: r for r in client.search_runs(ids)}


@pytest.mark.slow
def test_sigkilled_then_sigterm(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = _start(tmp_path, uri)
    try:
        _wait_for_training(first)
        first.send_signal(signal.SIGKILL)  # no chance to end its run
        first.wait(30)
        (orphan,) = _runs(uri).values()
        assert orphan.info.status == "RUNNING"
        assert orphan.data.tags["pid"] == str(first.pid) and orphan.data.tags["host"]

        second = _start(tmp_path, uri)
        _wait_for_training(second)  # its live run is open: the orphan was reaped then
        second.send_signal(signal.SIGTERM)
        rest, _ = second.communicate(timeout=120)
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert second.returncode == 128 + signal.SIGTERM, rest[-3000:]
    assert rest.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM"), rest[-2000:]
    assert "Traceback" not in rest
    (row,) = read_rows(tmp_path / "results" / "results.tsv")  # SIGKILL writes no row
    assert (row["status"], row["output_hash"]) == ("killed", "KILLED"), row
    assert "SIGTERM" in row["description"]
    runs = _runs(uri)
    killed = runs[row["mlflow_run_id"]]
    assert killed.info.status == "KILLED" and killed.data.tags["status"] == "killed"
    assert killed.info.end_time is not None
    assert runs[orphan.info.run_id].info.status == "FAILED"
    assert str(first.pid) in runs[orphan.info.run_id].data.tags["error"]
    assert not list(tmp_path.glob("*out*")), list(tmp_path.iterdir())  # nothing half-written


def test_a_run_whose_logging_fails_ends_failed(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from harness.sinks.mlflow_run import log_run

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(MlflowClient, "log_text", broken)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(OSError):
        log_run(uri, "e", "r", params={}, metrics={"m": 1.0}, tags={}, series={},
                texts={"run.log": "x"}, status="FINISHED", artifact_root=tmp_path)  # fmt: skip
    (run,) = _runs(uri).values()
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["error"]
    assert run.data.metrics["m"] == 1.0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_recording_is_held_until_the_record_ends(signum: int, code: int) -> None:
    if signal.getsignal(signum) is signal.SIG_IGN:  # a background job (`cmd &`) ignores SIGINT
        signal.signal(signum, signal.default_int_handler)
    before = signal.getsignal(signum)
    done = []
    with catch_interrupts() as signals, pytest.raises(Interrupted) as caught, signals.deferred():
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        done.append("recorded")
    assert done == ["recorded"] and caught.value.exit_code == code
    assert isinstance(caught.value, KeyboardInterrupt)  # code that handles Ctrl-C handles it
    assert signal.getsignal(signum) is before  # handlers restored


def test_output_is_never_half_written(tmp_path: Path) -> None:
    target = tmp_path / "out.h5ad"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as partial:
        partial.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as partial:
        assert partial.suffix == ".h5ad" and partial.parent == tmp_path
        partial.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_reap_ends_only_this_boots_runs_of_dead_processes(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from harness.sinks import orphans
    from harness.sinks.mlflow_run import _client, open_run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert orphans.alive(os.getpid(), orphans.process_tags()["pid_start"])
    assert not orphans.alive(dead.pid)
    assert not orphans.alive(os.getpid(), "1")  # same PID, another process (PID reused)

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mine = orphans.process_tags()
    ids = {
        name: open_run(uri, "e", name, 0, None, {**mine, **tags})
        for name, tags in {
            "dead": {"pid": str(dead.pid), "pid_start": ""},
            "other boot": {"pid": str(dead.pid), "boot_id": "another-machine"},
            "alive": {},  # this process
        }.items()
    }  # opening them reaped nothing yet: the store had no RUNNING run then
    orphans._REAPED.discard(uri)
    client = _client(uri)
    assert orphans.reap(client, uri) == [ids["dead"]]
    status = {n: client.get_run(i).info.status for n, i in ids.items()}
    assert status == {"dead": "FAILED", "other boot": "RUNNING", "alive": "RUNNING"}
