"""Every method runs end to end through the real CLI with MLflow tracking on (a sqlite store
in tmp), and its run reads back FINISHED with its timings and quality metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.sinks.mlflow_names import mlflow_key
from harness.sinks.mlflow_view import VIEW_TAG, training_view_url
from harness.sinks.results_tsv import read_rows
from tests.harness.bench.test_contract import TINY

REPO = Path(__file__).resolve().parents[3]
# the slowest here (~40 s on 2 busy cores: its likelihood tables); RCTD with MLflow on also
# runs by default in tests/harness/cli/test_cli.py
SLOW = {"rctd"}


def row_timing(cwd: Path) -> str:
    return read_rows(cwd / "results" / "results.tsv")[0]["timing"]


def _methods() -> list:
    names = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("name", _methods())
def test_method_runs_with_mlflow_on_and_finishes(
    tmp_path: Path, table_cache: Path, name: str
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    (tmp_path / "store").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [f"method={name}", "hardware=cpu", "hardware.threads=1", f"tracking.uri={uri}",
            f"paths.cache={table_cache}"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *args, *TINY[name]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]  # filtered at the source
    if row_timing(tmp_path) == "train":  # trainers: epoch i/n, pace, values; warm-up marked
        assert re.search(r"\] \S+ epoch 1/\d+  [\d.e-]+ s/epoch  \w+ ", proc.stdout), proc.stdout
        assert re.search(r"\] warm-up: \S+ epoch 1  ", proc.stdout), proc.stdout
    (row,) = read_rows(tmp_path / "results" / "results.tsv")
    assert row["status"] == "baseline" and row["mlflow_run_id"], row

    client = MlflowClient(uri)
    run = client.get_run(row["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name(name).experiment_id
    metrics = run.data.metrics
    assert metrics["elapsed_s"] == pytest.approx(float(row["elapsed_s"]), rel=1e-5)
    assert metrics["peak_mem_mb"] > 0 and "prepare_s" in metrics
    # every quality metric the console printed is in MLflow, under its MLflow key
    summary = proc.stdout.split("== harness summary ==", 1)[1]
    printed = [line.split(":", 1)[0].strip() for line in summary.splitlines() if " : " in line]
    skip = {"method", "hardware", "commit", "warmup_s", "output_hash", "verdict", "status",
            "mlflow_run_id", "mlflow_view", "resumed"}  # fmt: skip
    quality = [k for k in printed if k not in skip and not k.startswith("work_")]
    assert quality, summary
    missing = [k for k in quality if mlflow_key(k) not in metrics]
    assert not missing, (missing, sorted(metrics))
    # the printed link opens the training view whose columns hold the headline metric(s)
    exp = client.get_experiment(run.info.experiment_id)
    link = re.search(r"mlflow_view\s+: (\S+)", summary)
    assert link and link[1] == training_view_url(uri, exp.experiment_id), summary
    columns = json.loads(exp.tags[VIEW_TAG])["selectedColumns"]
    headline = [c.removeprefix("metrics.`").removesuffix("`") for c in columns[1:-2]]
    assert columns[0] == "metrics.`elapsed_s`" and headline, columns
    assert all(h in metrics for h in headline), (headline, sorted(metrics))
    assert run.data.tags["status"] == "baseline" and run.data.tags["verdict"] == "none"
