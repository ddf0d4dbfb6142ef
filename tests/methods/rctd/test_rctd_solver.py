"""RCTD per-pixel solver: PSD projection, box QP and the batched IRWLS."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import optimize

from methods.rctd.likelihood import LikelihoodTables
from methods.rctd.qp import psd_project, psd_project_with_norm, solve_box_qp
from methods.rctd.qtable import load_or_build_tables
from methods.rctd.solver import solve_irwls

F64 = torch.float64


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> LikelihoodTables:
    return load_or_build_tables(100, 60, tmp_path_factory.mktemp("qcache"))


def _synthetic(n: int, g: int, k: int, seed: int):
    """P ~ Exp, column-normalised; nUMI ~ U[200, 5000); w sparse Dirichlet over 1-3 types."""
    rng = np.random.default_rng(seed)
    p = rng.exponential(1.0, (g, k))
    p /= p.sum(0, keepdims=True)
    numi = rng.uniform(200, 5000, n)
    w = np.zeros((n, k))
    for i in range(n):
        m = rng.integers(1, min(3, k) + 1)
        idx = rng.choice(k, m, replace=False)
        w[i, idx] = rng.dirichlet(np.ones(m))
    y = rng.poisson(numi[:, None] * (w @ p.T))
    return torch.from_numpy(y), torch.from_numpy(numi), torch.from_numpy(p), w


# ------------------------------------------------------------------------------ PSD projection


def _ref_project(h: np.ndarray, floor: float) -> np.ndarray:
    h = 0.5 * (h + h.T)
    e, v = np.linalg.eigh(h)
    return (v * np.maximum(e, floor)) @ v.T


@pytest.mark.parametrize("k", [1, 2, 3, 5, 12])
@pytest.mark.parametrize("batch", [7, 300])
def test_psd_project(k, batch):
    rng = np.random.default_rng(k * 1000 + batch)
    a = rng.normal(size=(batch, k, k))
    h = a @ np.swapaxes(a, 1, 2) / k
    shift = rng.uniform(-1.5, 1.5, batch)  # mix of indefinite and clearly PD matrices
    h = h + shift[:, None, None] * np.eye(k) + 1e-3 * rng.normal(size=(batch, k, k))
    h[0] = 0.0  # all eigenvalues below the floor
    floor = 1e-2
    out, norm = psd_project_with_norm(torch.from_numpy(h), floor)
    assert out.shape == (batch, k, k) and out.dtype == F64
    o = out.numpy()
    np.testing.assert_allclose(o, np.swapaxes(o, 1, 2), atol=1e-12)
    ev = np.linalg.eigvalsh(o)
    assert ev.min() >= floor - 1e-10
    ref = np.stack([_ref_project(m, floor) for m in h])
    np.testing.assert_allclose(o, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(norm.numpy(), ev[:, -1], rtol=1e-10)
    np.testing.assert_allclose(o[0], floor * np.eye(k), atol=1e-14)
    assert torch.equal(psd_project(torch.from_numpy(h), floor), out)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_psd_project_nonfinite(k):
    h = torch.eye(k, dtype=F64).repeat(4, 1, 1) * 3.0
    h[1, 0, 0] = float("nan")
    h[2, -1, 0] = float("inf")
    h[3, 0, -1] = -float("inf")
    out, norm = psd_project_with_norm(h, 1e-3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], 3.0 * torch.eye(k, dtype=F64))
    for i in (1, 2, 3):
        torch.testing.assert_close(out[i], 1e-3 * torch.eye(k, dtype=F64))
    torch.testing.assert_close(norm, torch.tensor([3.0, 1e-3, 1e-3, 1e-3], dtype=F64))


# ------------------------------------------------------------------------------ box QP


def _qp_bruteforce(dm: np.ndarray, d: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """Exact minimiser by enumerating the set of coordinates held at their bound (KKT)."""
    k = len(d)
    best, best_obj = None, np.inf
    for r in range(k + 1):
        for fixed in itertools.combinations(range(k), r):
            free = [i for i in range(k) if i not in fixed]
            x = lb.copy()
            if free:
                rhs = d[free] - dm[np.ix_(free, list(fixed))] @ lb[list(fixed)]
                x[free] = np.linalg.solve(dm[np.ix_(free, free)], rhs)
            mult = dm @ x - d
            if np.all(x >= lb - 1e-12) and np.all(mult[list(fixed)] >= -1e-12):
                obj = 0.5 * x @ dm @ x - d @ x
                if obj < best_obj:
                    best, best_obj = x, obj
    assert best is not None
    return best


def _random_qps(k: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(batch, k, k)))
    ev = rng.uniform(0.3, 1.0, (batch, k))  # condition number <= 3.3
    dm = (q * ev[:, None, :]) @ np.swapaxes(q, 1, 2)
    d = rng.normal(size=(batch, k))
    lb = -rng.uniform(0, 1, (batch, k))
    return dm, d, lb


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_box_qp_matches_exact(k):
    dm, d, lb = _random_qps(k, 40, seed=k)
    x = solve_box_qp(torch.from_numpy(dm), torch.from_numpy(d), torch.from_numpy(lb), 300)
    x50 = solve_box_qp(torch.from_numpy(dm), torch.from_numpy(d), torch.from_numpy(lb), 50)
    n_active = 0
    for i in range(len(d)):
        ref = _qp_bruteforce(dm[i], d[i], lb[i])
        n_active += int(np.sum(np.isclose(ref, lb[i])))
        np.testing.assert_allclose(x[i].numpy(), ref, atol=1e-10)
        np.testing.assert_allclose(x50[i].numpy(), ref, atol=1e-5)
        res = optimize.minimize(
            lambda v, i=i: 0.5 * v @ dm[i] @ v - d[i] @ v,
            np.maximum(d[i] / np.diag(dm[i]), lb[i]),
            jac=lambda v, i=i: dm[i] @ v - d[i],
            bounds=[(b, None) for b in lb[i]],
            method="L-BFGS-B",
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000},
        )
        np.testing.assert_allclose(x[i].numpy(), res.x, atol=1e-5)
        assert np.all(x[i].numpy() >= lb[i])
    if k > 1:
        assert n_active > 0  # the bounds were actually binding somewhere


def test_box_qp_batch_independent():
    dm, d, lb = (torch.from_numpy(a) for a in _random_qps(6, 50, seed=11))
    full = solve_box_qp(dm, d, lb, 50)
    for i in range(0, 50, 7):
        one = solve_box_qp(dm[i : i + 1], d[i : i + 1], lb[i : i + 1], 50)
        assert torch.equal(one[0], full[i])
    x32 = solve_box_qp(dm.float(), d.float(), lb.float(), 50)
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), full, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ IRWLS


def test_batch_equals_per_pixel(tables):
    y, numi, p, _ = _synthetic(24, 200, 6, seed=3)
    kw = dict(max_iter=20, qp_sweeps=50)
    wb, cb = solve_irwls(y, numi, p, tables, batch_size=24, **kw)
    assert 0 < int(cb.sum()) < 24  # mixed convergence: compaction happened mid-run
    ws, cs = solve_irwls(y, numi, p, tables, batch_size=1, **kw)
    torch.testing.assert_close(wb, ws, rtol=0, atol=1e-12)
    assert torch.equal(cb, cs)
    w5, c5 = solve_irwls(y, numi, p, tables, batch_size=5, **kw)
    torch.testing.assert_close(wb, w5, rtol=0, atol=1e-12)
    assert torch.equal(cb, c5)
    # embedded in a larger batch of other pixels (CPU linear algebra paths are per matrix)
    y2, numi2, _, _ = _synthetic(300, 200, 6, seed=4)
    wl, cl = solve_irwls(torch.cat([y2, y]), torch.cat([numi2, numi]), p, tables, **kw)
    torch.testing.assert_close(wl[300:], wb, rtol=0, atol=1e-12)
    assert torch.equal(cl[300:], cb)
    # a permuted batch gives the same per-pixel answers
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    wp, cp = solve_irwls(y[perm], numi[perm], p, tables, batch_size=24, **kw)
    torch.testing.assert_close(wp, wb[perm], rtol=0, atol=1e-12)
    assert torch.equal(cp, cb[perm])


@pytest.fixture(scope="module")
def synthetic_fit(tables):
    y, numi, p, w = _synthetic(400, 400, 6, seed=0)
    w64, c64 = solve_irwls(y, numi, p, tables)
    return y, numi, p, w, w64, c64


def test_recovers_synthetic_truth(synthetic_fit):
    _, _, _, w, w64, c64 = synthetic_fit
    assert w64.dtype == F64 and w64.shape == w.shape and c64.dtype == torch.bool
    assert c64.float().mean() >= 0.99
    est = w64.numpy()
    assert np.all(est >= 0)
    assert (est.argmax(1) == w.argmax(1)).mean() >= 0.95
    srt = np.sort(w, 1)
    clear = srt[:, -1] - srt[:, -2] > 0.1
    assert (est.argmax(1) == w.argmax(1))[clear].mean() >= 0.99
    prop = est / est.sum(1, keepdims=True)
    assert np.abs(prop - w).mean() < 0.02
    assert np.abs(prop - w).max() < 0.25


def test_float32_agrees_with_float64(synthetic_fit, tables):
    y, numi, p, _, w64, _ = synthetic_fit
    w32, c32 = solve_irwls(y.float(), numi.float(), p.float(), tables)
    assert w32.dtype == torch.float32 and c32.dtype == torch.bool
    assert (w32.argmax(1) == w64.argmax(1)).float().mean() >= 0.99
    assert (w32.double() - w64).abs().max() < 1e-2


@pytest.mark.parametrize("k", [1, 2, 3])
def test_small_k_and_iteration_cap(tables, k):
    y, numi, p, _ = _synthetic(30, 150, k, seed=10 + k)
    w, c = solve_irwls(y, numi, p, tables)
    assert w.shape == (30, k) and torch.isfinite(w).all() and (w >= 0).all()
    assert c.all()
    w1, c1 = solve_irwls(y, numi, p, tables, max_iter=1)
    assert not c1.any()
    # one step from 1/K: s + 0.3 * delta with delta >= -s
    assert (w1 >= 0.7 / k - 1e-12).all()


def test_input_validation(tables):
    y, numi, p, _ = _synthetic(4, 20, 3, seed=1)
    with pytest.raises(ValueError):
        solve_irwls(y[:, :10], numi, p, tables)
    with pytest.raises(ValueError):
        solve_irwls(y, numi[:3], p, tables)
    with pytest.raises(TypeError):
        solve_irwls(y, numi, p.long(), tables)


def _ill_conditioned_qps(k: int, batch: int, seed: int):
    """Box QPs with condition numbers up to 1e4: Gauss-Seidel converges slowly on these."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(batch, k, k)))
    ev = np.exp(rng.uniform(np.log(1e-4), 0.0, (batch, k)))
    ev[:, -1] = 1.0
    dm = (q * ev[:, None, :]) @ np.swapaxes(q, 1, 2) + 1e-7 * np.eye(k)
    d = rng.normal(size=(batch, k))
    lb = -rng.uniform(0, 1, (batch, k))
    return dm, d, lb


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_box_qp_exact_finish(k):
    dm, d, lb = _ill_conditioned_qps(k, 30, seed=20 + k)
    t = torch.from_numpy
    for sweeps in (0, 3, 50):
        x = solve_box_qp(t(dm), t(d), t(lb), sweeps, exact=True).numpy()
        for i in range(len(d)):
            ref = _qp_bruteforce(dm[i], d[i], lb[i])
            np.testing.assert_allclose(x[i], ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    if k > 2:  # without the finish, a few sweeps stop short
        x3 = solve_box_qp(t(dm), t(d), t(lb), 3).numpy()
        refs = np.stack([_qp_bruteforce(dm[i], d[i], lb[i]) for i in range(len(d))])
        assert np.abs(x3 - refs).max() > 1e-6


def test_subsets_match_full_fit_and_are_batch_independent(tables):
    from methods.rctd.likelihood import _flat_row_offset
    from methods.rctd.solver import solve_subsets

    y, numi, p, _ = _synthetic(40, 150, 4, seed=7)
    w_full, c_full = solve_irwls(y, numi, p, tables, max_iter=30)
    row_off = _flat_row_offset(y, tables)
    pix = torch.arange(40)
    types = torch.arange(4).expand(40, 4)
    w_sub, c_sub, nll = solve_subsets(row_off, numi, p, pix, types, tables, max_iter=30, score=True)
    torch.testing.assert_close(w_sub, w_full, rtol=0, atol=1e-10)
    assert torch.equal(c_sub, c_full) and nll is not None and torch.isfinite(nll).all()
    # pairs of types, in one batch or in small ones, in any order of tasks
    pairs = torch.tensor([[0, 1], [2, 3], [1, 3]]).repeat(40, 1)
    pix2 = torch.arange(40).repeat_interleave(3)
    w2, _, s2 = solve_subsets(row_off, numi, p, pix2, pairs, tables, max_iter=25, score=True)
    w2b, _, s2b = solve_subsets(
        row_off, numi, p, pix2.flip(0), pairs.flip(0), tables, max_iter=25, score=True,
        batch_size=7,
    )  # fmt: skip
    torch.testing.assert_close(w2b.flip(0), w2, rtol=0, atol=1e-12)
    torch.testing.assert_close(s2b.flip(0), s2, rtol=0, atol=1e-9)
    # the NLL is that of the likelihood at the fitted weights
    from methods.rctd.likelihood import calc_q_all

    lam = torch.stack([numi[0] * (p[:, pairs[j]] @ w2[j]) for j in range(3)])
    ref = -calc_q_all(y[0].expand(3, -1), lam, tables)[0].sum(1)
    torch.testing.assert_close(s2[:3], ref, rtol=1e-10, atol=1e-8)
