"""``harness.report``'s views: a sweep grouped by method, dataset and swept keys (table and
plot: clean legend, axis labels, quality beside time), methods × datasets, a progress plot
whose running best never crosses methods."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from harness.report import main as report_main
from harness.reporting import plots
from harness.reporting.rows import job_table, matrix, quality, varying_keys
from harness.sinks.results_tsv import append_row, read_rows


def _sweep_rows(results: Path) -> None:
    for bs, dt in itertools.product([4000, 1000, 2000], ["float64", "float32"]):
        append_row(results / "results.tsv", {
            "method": "rctd", "dataset": "spatial/synthetic", "hardware": "cpu", "status": "run",
            "verdict": "exact", "elapsed_s": 4000 / bs * (0.5 if dt == "float32" else 1.0),
            "quality": f"truth_dominant_accuracy={0.97 if dt == 'float64' else 0.96}",
            "tag": "sweep:s2",
            "overrides": f"+sweep=rctd_batch method.batch_size={bs} hardware.dtype={dt} run.tag=x",
        })  # fmt: skip


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots would save (kept open for inspection)."""
    saved: list = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    return saved


def test_sweep_is_grouped_by_swept_keys_with_quality_beside_time(tmp_path, capsys, figures):
    results = tmp_path / "results"
    _sweep_rows(results)
    rows = read_rows(results / "results.tsv")
    assert varying_keys(rows) == ["method.batch_size", "hardware.dtype"]  # not run.tag
    assert quality(rows[0]) == ("truth_dominant_accuracy", 0.97)
    assert report_main([f"paths.results={results}", "sweep=s2"]) == 0  # param: the numeric key
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "grouped by method.batch_size, hardware.dtype" in lines[0]
    assert lines[1].split() == ["#", "batch_size", "dtype", "status", "verdict", "elapsed_s",
                                "truth_dominant_accuracy"]  # fmt: skip
    assert [line.split()[1] for line in lines[2:8]] == ["1000"] * 2 + ["2000"] * 2 + ["4000"] * 2
    (fig,) = figures
    time_ax, quality_ax = fig.axes
    legend = time_ax.get_legend()
    assert legend.get_title().get_text() == "dtype"
    assert sorted(t.get_text() for t in legend.get_texts()) == ["float32", "float64"]
    assert quality_ax.get_xlabel() == "method.batch_size" and "elapsed_s" in time_ax.get_ylabel()
    assert quality_ax.get_ylabel().startswith("truth_dominant_accuracy")
    assert report_main([f"paths.results={results}", "sweep=nope"]) == 2


def test_methods_by_datasets_and_progress_per_method(tmp_path, capsys, figures):
    results = tmp_path / "results"
    for method, dataset, q, t in [
        ("rctd", "spatial/synthetic", "truth_dominant_accuracy=0.97", 3.0),
        ("rctd", "spatial/pbmc68k", "truth_dominant_accuracy=0.91", 5.0),
        ("scbert", "labelled/synthetic", "macro_f1=0.9", 30.0),
        ("scbert", "labelled/synthetic", "macro_f1=0.95", 20.0),
    ]:
        append_row(results / "results.tsv", {"method": method, "dataset": dataset, "hardware": "cpu",
                   "status": "baseline", "elapsed_s": t, "quality": q})  # fmt: skip
    rows = read_rows(results / "results.tsv")
    table = matrix(rows).splitlines()
    assert table[0].split() == [
        "method",
        "labelled/synthetic",
        "spatial/pbmc68k",
        "spatial/synthetic",
    ]
    assert table[1].split() == ["rctd", "(truth_dominant_accuracy)", "·", "5", "s", "·", "0.91",
                                "3", "s", "·", "0.97"]  # fmt: skip
    assert table[2].split()[:6] == ["scbert", "(macro_f1)", "20", "s", "·", "0.95"]  # the latest
    assert report_main([f"paths.results={results}"]) == 0
    assert "methods × datasets" in capsys.readouterr().out
    (fig,) = figures
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert sorted(lab for lab in labels if lab.startswith("running best")) == [
        "running best · rctd · spatial/pbmc68k",
        "running best · rctd · spatial/synthetic",
        "running best · scbert · labelled/synthetic",
    ]
    sweep = job_table(rows[:2], ["dataset"]).splitlines()  # a job table names its columns
    assert sweep[0].split()[:2] == ["#", "dataset"] and sweep[2].split()[1] == "spatial/pbmc68k"
