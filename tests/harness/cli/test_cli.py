"""The CLI end to end: a row appended, an MLflow run readable, the second run verdict 'exact'."""

import pytest

from harness.sinks.results_tsv import COLUMNS, read_rows
from tests.conftest import SMALL


@pytest.mark.slow
def test_two_runs_row_mlflow_and_exact_verdict(harness_cli, tmp_path):
    first = harness_cli("hardware=cpu", *SMALL, "run.description=first")
    assert first.returncode == 0, first.stderr
    assert "harness summary" in first.stdout
    second = harness_cli("hardware=cpu", *SMALL, "run.description=second")
    assert second.returncode == 0, second.stderr

    rows = read_rows(tmp_path / "results" / "results.tsv")
    assert len(rows) == 2 and set(rows[0]) == set(COLUMNS)
    a, b = rows
    assert (a["status"], a["verdict"]) == ("baseline", "none")
    assert (b["status"], b["verdict"]) == ("run", "exact")
    assert a["output_hash"] == b["output_hash"] and len(a["output_hash"]) == 16
    assert a["method"] == "rctd" and a["dataset"] == "spatial/synthetic" and a["hardware"] == "cpu"
    assert float(b["elapsed_s"]) > 0 and int(b["n_runs"]) == 2
    assert "dataset.n_pixels=300" in b["overrides"]
    assert list((tmp_path / "results" / "baselines").glob("rctd-*/*.npz"))

    mlflow = pytest.importorskip("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["rctd"])
    assert len(runs) == 2
    by_id = runs.set_index("run_id")
    run = by_id.loc[b["mlflow_run_id"]]
    assert run["tags.verdict"] == "exact"
    assert run["tags.output_hash"] == b["output_hash"]
    assert run["params.method.batch_size"] == "10000"
    assert run["metrics.elapsed_s"] == pytest.approx(float(b["elapsed_s"]), rel=1e-4)
    assert run["metrics.truth_dominant_accuracy"] >= 0.95


@pytest.mark.slow
def test_changed_solver_setting_is_close_or_wrong_not_exact(harness_cli, tmp_path):
    assert harness_cli("hardware=cpu", *SMALL).returncode == 0
    # fewer QP sweeps changes the weights slightly: the hash differs, the verdict is judged
    proc = harness_cli("hardware=cpu", *SMALL, "method.qp_sweeps=3", "method.tol.max_abs_dw=1e-12")
    assert proc.returncode == 0, proc.stderr
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    assert row["verdict"] == "wrong"


@pytest.mark.slow
def test_each_mode_has_its_own_baseline(harness_cli, tmp_path):
    # the task identity (every method key but the search space) keys the baseline: doublet is
    # never judged against full
    for mode in ("full", "doublet", "doublet"):
        proc = harness_cli("hardware=cpu", *SMALL, "tracking.mlflow=false", f"method.mode={mode}")
        assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "results" / "results.tsv")
    assert [(r["status"], r["verdict"]) for r in rows] == [
        ("baseline", "none"), ("baseline", "none"), ("run", "exact")
    ]  # fmt: skip
    assert len(list((tmp_path / "results" / "baselines").glob("rctd-*/*.npz"))) == 2


def test_crash_writes_a_crash_row(harness_cli, tmp_path):
    # a dataset target that raises a non-user error is a crash: row with hash CRASH
    proc = harness_cli(
        "hardware=cpu", *SMALL, "tracking.mlflow=false", "dataset._target_=builtins.len"
    )
    assert proc.returncode != 0
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    assert (row["status"], row["output_hash"]) == ("crash", "CRASH")
    assert "TypeError" in row["description"]


def test_timeout_writes_a_timeout_row(harness_cli, tmp_path):
    proc = harness_cli(
        "hardware=cpu", "bench.timeout_s=0.3", "bench.repeats=50", "tracking.mlflow=false"
    )
    assert proc.returncode == 124, proc.stderr
    assert "bench.timeout_s" in proc.stderr
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    assert (row["status"], row["output_hash"]) == ("timeout", "TIMEOUT")


def test_bad_input_file_writes_nothing(harness_cli, tmp_path):
    (tmp_path / "sp.h5ad").write_text("not hdf5")
    proc = harness_cli(
        "dataset=spatial/h5ad", "dataset.spatial=sp.h5ad", "dataset.reference=sp.h5ad"
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "dataset.spatial" in lines[0] and "sp.h5ad" in lines[0]
    assert not (tmp_path / "results" / "results.tsv").exists()
    assert not (tmp_path / "results" / "mlflow.db").exists()


@pytest.mark.slow
def test_pbmc68k_real_cells(harness_cli, tmp_path):
    proc = harness_cli(
        "hardware=cpu", "dataset=spatial/pbmc68k", "dataset.n_pixels=200", "tracking.mlflow=false"
    )
    assert proc.returncode == 0, proc.stderr
    row = read_rows(tmp_path / "results" / "results.tsv")[-1]
    assert (row["dataset"], row["status"]) == ("spatial/pbmc68k", "baseline")
    accuracy = float(proc.stdout.split("truth_dominant_accuracy")[1].split(":")[1].split()[0])
    assert accuracy >= 0.8
