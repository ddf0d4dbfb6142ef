"""RCTD ``batch_size=auto``: the per-pixel footprint model bounds the measured peak, and a
memory cap picks a smaller batch without changing the outputs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from harness.sinks.results_tsv import read_rows
from methods.rctd import memory
from tests.conftest import REPO, SMALL

PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np, scipy.sparse as sp, torch
    from methods.rctd import memory
    from methods.rctd.qtable import load_or_build_tables
    from methods.rctd.solver import solve_irwls, tile_elems

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    n, g, k = 3000, 1500, 12
    torch.set_num_threads(1)
    tables = load_or_build_tables(100, 60, Path(sys.argv[1]))
    rng = np.random.default_rng(0)
    p = rng.exponential(1.0, (g, k))
    p /= p.sum(0, keepdims=True)
    numi = rng.uniform(200, 1000, n)
    w = rng.dirichlet(np.full(k, 0.3), n)
    y = sp.csr_matrix(rng.poisson(numi[:, None] * (w @ p.T)).astype(np.float64))
    p_t, numi_t = torch.from_numpy(p), torch.from_numpy(numi)
    solve_irwls(y[:50], numi_t[:50], p_t, tables, max_iter=5)  # lazy tables, kernels
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM)
    before = status("VmRSS:")
    solve_irwls(y, numi_t, p_t, tables, batch_size=n)
    peak = status("VmHWM:") - before
    cpu = torch.device("cpu")
    print(peak, n * memory.row_bytes(g, k, 8) + memory.fixed_bytes(tile_elems(cpu), 8))
    """
)


def test_auto_batch_size_fits_the_budget():
    row, fixed = memory.row_bytes(2000, 12, 8), memory.fixed_bytes(2**18, 8)
    budget = 2 * (fixed + 700 * row)  # half of it holds the tiles and 700 pixels
    assert memory.auto_batch_size(10**6, 2000, 12, 8, 2**18, budget) == 700
    assert memory.auto_batch_size(300, 2000, 12, 8, 2**18, budget) == 300  # all pixels fit
    assert memory.auto_batch_size(300, 2000, 12, 8, 2**18, 1) == 1  # never below one pixel


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_footprint_model_bounds_the_measured_peak(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
        timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    measured, model = map(int, proc.stdout.split())
    # the model is an upper bound, and not a loose one (measured 0.67-0.85 of it here)
    assert 0.5 * model <= measured <= model, (measured, model)


@pytest.mark.slow
def test_memory_cap_picks_a_smaller_batch_same_outputs(harness_cli, tmp_path):
    # a cap that leaves room for the tiles and ~40 pixels of 200 genes (of 300)
    room = memory.fixed_bytes(2**18, 8) + 40 * memory.row_bytes(200, 4, 8)
    cap = f"method.memory_gb={2 * room / 2**30:.6f}"
    common = ["hardware=cpu", *SMALL, "bench.repeats=1", "tracking.mlflow=false"]
    fixed = harness_cli(*common)
    auto = harness_cli(*common, "method.batch_size=auto", cap)
    assert fixed.returncode == 0 and auto.returncode == 0, auto.stderr
    batch, pixels = map(int, re.search(r"auto: (\d+) of (\d+) pixels", auto.stderr).groups())
    assert 1 <= batch < pixels
    a, b = read_rows(tmp_path / "results" / "results.tsv")
    assert a["output_hash"] == b["output_hash"] and b["verdict"] == "exact"
    bad = harness_cli(*common, "method.batch_size=big")
    assert bad.returncode == 2
    assert "method.batch_size='big': must be an integer or one of ['auto']" in bad.stderr
