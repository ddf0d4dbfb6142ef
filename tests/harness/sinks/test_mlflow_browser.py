"""The MLflow comparison view, looked at in a real browser (Debian's Chromium driven by
playwright; no browser download): a 3-job sweep's runs table and compare page show the run
names, their elapsed_s and the swept parameter. Skips, saying why, without Chromium or
playwright. The screenshots are saved under results/test-artifacts/ as test artifacts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness.sinks.mlflow_view import LOCAL_UI, training_view_url
from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "results" / "test-artifacts"
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sweep(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "harness", "-m", "method=rctd", "hardware=cpu",
           "dataset.n_pixels=150", "dataset.n_genes=120", "dataset.n_types=3",
           "method.sigma_override=100", "bench.repeats=1", "method.max_iter=20,30,40"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp_path, proc.stdout


@pytest.mark.slow
def test_runs_table_and_compare_page_in_chromium(sweep):
    sweep, stdout = sweep
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    rows = read_rows(sweep / "results" / "results.tsv")
    assert len(rows) == 3
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{sweep}/results/mlflow.db")
    runs = [client.get_run(r["mlflow_run_id"]) for r in rows]
    exp_id = runs[0].info.experiment_id
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "-w", "1", "--port", str(port), "--host",
         "127.0.0.1", "--backend-store-uri", f"sqlite:///{sweep}/results/mlflow.db"],
        cwd=sweep, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        names = [r.info.run_name for r in runs]
        assert {n.split(" · ")[0] for n in names} == {f"max_iter={i}" for i in (20, 30, 40)}
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # the link every run prints: the model-training view (MLflow 3 opens GenAI's
            # traces otherwise), the runs table with the harness's columns
            links = [ln.split(":", 1)[1].split()[0] for ln in stdout.splitlines()
                     if ln.strip().startswith("mlflow_view")]  # fmt: skip
            assert links and links[-1] == training_view_url(LOCAL_UI, exp_id), stdout[-1500:]
            page.goto(links[-1].replace(LOCAL_UI, base), wait_until="load")
            try:  # the runs table, one row per job, each named by its swept value
                page.wait_for_selector("text=3 matching runs", timeout=60_000)
                page.wait_for_selector("text=elapsed_s", timeout=30_000)
            finally:
                page.screenshot(path=str(ARTIFACTS / "mlflow-runs.png"), full_page=True)
            text = page.inner_text("body")
            assert all(name in text for name in names), text[:2000]
            headers = text[: text.index(names[0][:8])]  # the table's header row, before the runs
            for column in ("elapsed_s", "truth_dominant_accuracy", "verdict", "status"):
                assert column in headers, headers[-800:]
            assert "workflowType=machine_learning" in page.url
            ids = ",".join(f'"{r.info.run_id}"' for r in runs)
            page.goto(f"{base}/#/compare-runs?runs=[{ids}]&experiments=[\"{exp_id}\"]",
                      wait_until="load")  # fmt: skip
            page.wait_for_selector("text=elapsed_s", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow-compare.png"), full_page=True)
            text = page.inner_text("body")
            browser.close()
        assert all(name in text for name in names)
        assert "method.max_iter" in text
        for run in runs:  # the figure of record, as the UI rounds it
            value = run.data.metrics["elapsed_s"]
            assert f"{value:.3g}"[:4] in text or f"{value:.4f}"[:5] in text, value
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
