"""RCTD's fused CPU kernels (numba) against the torch code paths that CUDA runs.

Every kernel is chosen by device; ``CPU_KERNELS = False`` in its module sends the CPU through
the torch path, so the GPU path keeps being exercised here on machines without a GPU. Also the
hand-over of sigma estimation's last fit to the main fit (``FitMemo``): it must give the main
fit exactly what fitting those pixels again as one batch would.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from methods.rctd import likelihood, qp, sigma, solver
from methods.rctd.qtable import SIGMA_GRID, load_or_build_tables
from tests.methods.rctd.test_rctd_solver import _random_qps, _synthetic

F64 = torch.float64


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> likelihood.LikelihoodTables:
    return load_or_build_tables(100, 60, tmp_path_factory.mktemp("qcache"))


def _torch_paths(monkeypatch) -> None:
    for module in (likelihood, qp, sigma):
        monkeypatch.setattr(module, "CPU_KERNELS", False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_d0", [True, False])
def test_spline_kernel_matches_torch(tables, dtype, with_d0):
    t = tables.to("cpu", dtype)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 80, (300, 200), generator=g)
    lam = (torch.rand(300, 200, generator=g, dtype=F64) * 40).to(dtype)
    lam[0, :5] = torch.tensor([0.0, 1e-6, 1600.0, 5000.0, 1e-4], dtype=dtype)  # clamped ends
    row_off = likelihood._flat_row_offset(y, t)
    got = likelihood._spline_eval(row_off, lam, t, with_d0=with_d0)
    want = likelihood._spline_eval_torch(row_off, lam, t, with_d0=with_d0)
    rtol = 1e-12 if dtype == F64 else 1e-5
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@pytest.mark.parametrize("k", [3, 6, 12])
def test_qp_kernels_match_torch(monkeypatch, k):
    """The Gauss-Seidel kernel matches the TorchScript sweeps; the QP system kernel gives the
    same IRWLS step. (Its power-iteration norm can differ from eigvalsh when the two largest
    eigenvalues nearly coincide, but the step is scale-free up to the 1e-7 ridge.)"""
    d_mat, d, lb = (torch.from_numpy(a) for a in _random_qps(k, 400, seed=k))
    h = d_mat * 50.0
    h[:7] -= 3.0 * torch.eye(k, dtype=F64)  # some need the PSD projection
    h[7, 0, 1] = float("nan")  # and one is replaced by floor * I
    g = torch.randn(400, k, dtype=F64, generator=torch.Generator().manual_seed(k))
    fused_system = qp.qp_system(h, g, 1e-3)
    fused_gs = qp.solve_box_qp(d_mat, d, lb, 50)
    _torch_paths(monkeypatch)
    plain_system = qp.qp_system(h, g, 1e-3)
    torch.testing.assert_close(fused_gs, qp.solve_box_qp(d_mat, d, lb, 50), rtol=1e-10, atol=1e-12)
    steps = [qp.solve_box_qp(m, v, lb, 200) for m, v in (fused_system, plain_system)]
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-7, atol=1e-9)


def test_sigma_scores_match_torch(monkeypatch, tmp_path):
    sigmas = list(SIGMA_GRID[SIGMA_GRID.index(90) : SIGMA_GRID.index(110) + 1])
    store = {s: load_or_build_tables(s, 60, tmp_path) for s in sigmas}
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 70, (20000,), generator=gen).to(F64)
    lam = torch.rand(20000, generator=gen, dtype=F64) * 30
    fused = sigma.score_sigmas(y, lam, sigmas, store)
    _torch_paths(monkeypatch)
    plain = sigma.score_sigmas(y, lam, sigmas, store)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=0.0)
    assert int(torch.argmin(fused)) == int(torch.argmin(plain))


def test_full_fit_matches_torch(monkeypatch, tables):
    y, numi, p, _ = _synthetic(300, 80, 6, seed=3)
    kw = dict(max_iter=30, qp_sweeps=50)
    w1, c1 = solver.solve_irwls(y, numi, p, tables, **kw)
    _torch_paths(monkeypatch)
    w2, c2 = solver.solve_irwls(y, numi, p, tables, **kw)
    assert torch.equal(c1, c2)
    torch.testing.assert_close(w1, w2, rtol=0.0, atol=1e-8)


def test_sigma_fit_is_handed_to_the_main_fit_exactly(monkeypatch, tables):
    y, numi, p, _ = _synthetic(400, 80, 6, seed=4)
    store = {s: tables for s in SIGMA_GRID}
    stay = torch.tensor  # scores that keep sigma where it starts: converged after one epoch
    monkeypatch.setattr(
        sigma, "score_sigmas", lambda y, lam, w, t: stay([float(s != sigma.SIGMA_START) for s in w])
    )
    counts = sp.csr_matrix(y.numpy().astype(np.float64))
    kw = dict(max_iter=30, min_change=1e-3, step=0.3, psd_floor=1e-3, qp_sweeps=50,
              qp_exact=False, batch_size=10000)  # fmt: skip
    chosen = sigma.choose_sigma(
        counts, numi.to(F64), p, store, umi_min_sigma=300, n_fit=150, n_epoch=8, seed=0,
        solver_kw=kw,
    )  # fmt: skip
    assert chosen == sigma.SIGMA_START and solver._MEMO  # the memo is on offer
    rows = solver._MEMO[0].rows
    handed = solver.solve_irwls(counts, numi.to(F64), p, store[chosen], **kw)
    assert not solver._MEMO  # used once
    fresh = solver.solve_irwls(counts, numi.to(F64), p, store[chosen], **kw)
    # The handed rows are exactly a fresh fit of those pixels as a batch of their own ...
    alone = solver.solve_irwls(counts[rows.numpy()], numi.to(F64)[rows], p, store[chosen], **kw)
    assert torch.equal(handed[0][rows], alone[0]) and torch.equal(handed[1], fresh[1])
    # ... and the whole fit agrees with a fit of all pixels to the last bits only: BLAS sums a
    # 150-row and a 400-row product in different orders (measured 2.2e-16 at most).
    torch.testing.assert_close(handed[0], fresh[0], rtol=0.0, atol=1e-14)


def test_memo_is_refused_when_anything_differs(tables):
    y, numi, p, _ = _synthetic(200, 60, 4, seed=5)
    kw = dict(max_iter=20, min_change=1e-3, step=0.3, psd_floor=1e-3, qp_sweeps=50,
              qp_exact=False)  # fmt: skip
    rows = torch.arange(0, 200, 2)
    w, c = solver.solve_irwls(y[rows], numi[rows], p, tables, **kw)
    wrong = torch.full_like(w, 0.5)  # a planted memo: right rows, wrong weights
    for change in ("counts", "profiles", "settings"):
        solver.remember_fit(solver.FitMemo(
            rows=rows, y=y[rows].to(F64), numi=numi[rows], profiles=p, tables=tables,
            settings=dict(kw), weights=wrong, converged=c,
        ))  # fmt: skip
        y2, p2, kw2 = y.clone(), p, dict(kw)
        if change == "counts":
            y2[rows[3], 0] += 1
        elif change == "profiles":
            p2 = p * 1.0000001
        else:
            kw2["qp_sweeps"] = 40
        got, _ = solver.solve_irwls(y2, numi, p2, tables, **kw2)
        assert not torch.equal(got[rows], wrong), change
        assert not solver._MEMO
