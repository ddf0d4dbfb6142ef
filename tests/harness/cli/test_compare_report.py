"""A/B compare of two commits (CI gate exit code) and the report's table and plots."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from harness.report import main as report_main
from tests.loop.loop_repo import TOY, LoopRepo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> LoopRepo:
    r = LoopRepo(tmp_path_factory.mktemp("comparerepo"))
    r.set_knob("SLEEP_S", "0.03", "faster")
    return r


def _compare(repo: LoopRepo, a: str, b: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo.root)}
    args = [*TOY[:3], "compare.rounds=3", "compare.max_pairs=3", "compare.pair_sd=0.005"]
    cmd = [sys.executable, "-m", "harness.compare", a, b, *args, *extra]
    return subprocess.run(cmd, cwd=repo.root, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_compare_flags_a_regression_only_one_way(repo):
    faster = _compare(repo, "HEAD~1", "HEAD")
    assert faster.returncode == 0, faster.stderr
    # sleep 0.05 -> 0.03 s per run: 1.67x, less the request overhead both sides pay
    speed = re.search(r"speed-up A→B: ([0-9.]+)x", faster.stdout)
    assert speed and 1.3 < float(speed[1]) < 1.8 and "not slower" in faster.stdout
    agree = re.search(r"identical on (\d+)/(\d+) fresh inputs", faster.stdout)
    assert agree and agree[1] == agree[2] and int(agree[1]) >= 6  # >= 2 pairs x 3 rounds
    ratios = re.search(r"B/A ratio per worker pair: (.*)", faster.stdout)
    assert ratios and all(0.5 < float(r) < 0.77 for r in ratios[1].split())  # 0.6 + overhead
    slower = _compare(repo, "HEAD", "HEAD~1")
    assert slower.returncode == 1 and "REGRESSION" in slower.stdout


def test_compare_unknown_revision(repo):
    proc = _compare(repo, "HEAD", "no-such-rev")
    assert proc.returncode == 2 and "no-such-rev" in proc.stderr


def test_report_table_and_plots(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    from harness.sinks.results_tsv import append_row

    statuses = ["baseline", "discard", "keep", "crash", "keep", "discard"]
    for i, status in enumerate(statuses):
        elapsed = None if status == "crash" else 1.0 - 0.1 * i
        append_row(
            results / "results.tsv",
            {
                "status": status,
                "tag": "t",
                "elapsed_s": elapsed,
                "overrides": "method=rctd",
                "description": f"try {i}",
            },
        )
    for n in (1000, 2000, 4000):
        append_row(
            results / "results.tsv",
            {
                "status": "run",
                "tag": "sweep:s1",
                "elapsed_s": n / 1000,
                "overrides": f"dataset.n_pixels={n} bench.repeats=3",
            },
        )
    assert report_main([f"paths.results={results}", "tag=t"]) == 0
    out = capsys.readouterr().out
    assert out.count("discard") == 2 and (results / "progress.png").stat().st_size > 1000
    assert report_main([f"paths.results={results}", "sweep=s1", "param=dataset.n_pixels"]) == 0
    assert (results / "sweep-s1.png").stat().st_size > 1000
    assert report_main([f"paths.results={results}", "bogus=1"]) == 2


@pytest.mark.slow
def test_compare_says_when_differing_outputs_are_within_tolerance(repo):
    repo.set_knob("OFFSET", "1e-9", "a last-bits change: within the toy's 1e-6 tolerance")
    close = _compare(repo, "HEAD~1", "HEAD", "compare.max_pairs=2", "compare.min_pairs=2")
    assert close.returncode == 0, close.stderr
    line = re.search(
        r"outputs of B vs A: identical on 0/(\d+) fresh inputs; (\d+) close", close.stdout
    )
    assert line and line[1] == line[2], close.stdout
    assert "within the method's tolerance" in close.stdout and "WRONG" not in close.stdout
