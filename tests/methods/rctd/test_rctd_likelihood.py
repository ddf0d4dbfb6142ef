"""RCTD likelihood tables, lambda grid and spline evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from methods.rctd.likelihood import (
    A_TAIL,
    C_HT,
    LikelihoodTables,
    build_x_vals,
    calc_q_all,
    ht_log_density,
    spline_second_derivatives,
    x_index,
)
from methods.rctd.qtable import (
    GAMMA_STEP,
    SIGMA_GRID,
    compute_q_table,
    load_or_build_tables,
    save_rctd_py_npz,
)

K_VAL = 60


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> LikelihoodTables:
    return load_or_build_tables(100, K_VAL, tmp_path_factory.mktemp("qcache"))


# ------------------------------------------------------------------------------ density, grid


def test_ht_density_normalised_and_c1():
    ht = lambda z: math.exp(ht_log_density(np.array(z)))  # noqa: E731
    inner, _ = integrate.quad(ht, -3, 3, epsabs=1e-14)
    tail, _ = integrate.quad(ht, 3, np.inf, epsabs=1e-14)
    assert inner + 2 * tail == pytest.approx(1.0, abs=1e-10)
    expected_c = 1.0 / (math.erf(3 / math.sqrt(2)) + 3 * A_TAIL)
    assert math.isclose(C_HT, expected_c, rel_tol=1e-15)
    eps = 1e-7
    assert ht(3 - 1e-12) == pytest.approx(ht(3 + 1e-12), rel=1e-10)
    left = (ht(3 - 1e-12) - ht(3 - eps)) / eps
    right = (ht(3 + eps) - ht(3 + 1e-12)) / eps
    assert left == pytest.approx(right, rel=1e-5)
    assert ht(-4.2) == pytest.approx(ht(4.2))


def test_x_grid():
    x = build_x_vals()
    assert x.dtype == np.float64 and x.shape == (439,)
    assert x[0] == 1e-4 and x[-1] >= 1600
    assert np.all(np.diff(x) > 0)
    rng = np.random.default_rng(0)
    lam = np.concatenate(
        [
            np.exp(rng.uniform(np.log(1e-4), np.log(1600 - 1e-4), 200_000)),
            rng.uniform(1e-4, 1600 - 1e-4, 50_000),
            [1e-4, 1600 - 1e-4],
            x[1:-1] * (1 + 1e-12),
            x[1:-1] * (1 - 1e-12),
        ]
    )
    lam = lam[(lam >= 1e-4) & (lam <= 1600 - 1e-4)]
    i = x_index(torch.from_numpy(lam)).numpy()
    assert i.min() == 0 and i.max() == 437
    assert np.all(x[i] <= lam) and np.all(lam < x[i + 1])
    # the nodes themselves (below the upper clip) open their own interval
    nodes = torch.from_numpy(x[:-1])
    assert torch.equal(x_index(nodes), torch.arange(438))
    # float32 input: index from the float64 value of the fp32 number
    lam32 = torch.from_numpy(lam).float()
    i32 = x_index(lam32).numpy()
    lam32_64 = lam32.double().numpy()
    ok = (lam32_64 >= 1e-4) & (lam32_64 <= 1600 - 1e-4)
    assert np.all(x[i32[ok]] <= lam32_64[ok]) and np.all(lam32_64[ok] < x[i32[ok] + 1])


# ------------------------------------------------------------------------------ Q table


def _q_direct(sigma: float, k: int, xi: float) -> float:
    """The upstream rule by brute force: log sum_j 0.004 p_sigma(g_j) Poisson(k; x e^g_j)."""
    g = -20.0 + GAMMA_STEP * np.arange(10001)
    e = (
        stats.poisson.logpmf(k, xi * np.exp(g))
        + ht_log_density(g / sigma)
        - math.log(sigma)
        + math.log(GAMMA_STEP)
    )
    m = e.max()
    return float(m + math.log(np.exp(e - m).sum()))


@pytest.mark.parametrize("sigma", [0.1, 0.3, 1.0, 2.0])
def test_q_table_vs_direct_sum_and_quad(sigma):
    x = build_x_vals()
    q = compute_q_table(sigma, x, 40)
    assert q.shape == (43, 439) and q.dtype == np.float64 and np.isfinite(q).all()
    for k, i in [(0, 0), (0, 300), (0, 438), (1, 50), (5, 100), (20, 200), (40, 250), (42, 10)]:
        xi = x[i]
        assert q[k, i] == pytest.approx(_q_direct(sigma, k, xi), rel=1e-13, abs=1e-12), (k, i)

        def f(g, k=k, xi=xi):
            return math.exp(
                stats.poisson.logpmf(k, xi * math.exp(g))
                + ht_log_density(g / sigma)
                - math.log(sigma)
            )

        # the node sum is the integral up to its end-point terms (< 1e-4 relative here)
        peak = float(np.clip(math.log(max(k, 0.5) / xi), -19.9, 19.9))
        pts = sorted({-3 * sigma, 3 * sigma, peak})
        val, _ = integrate.quad(f, -20, 20, points=pts, limit=1000, epsabs=0, epsrel=1e-12)
        assert q[k, i] == pytest.approx(math.log(val), abs=1e-4), (k, i)


def test_q_table_large_k_and_sigma_grid():
    assert len(SIGMA_GRID) == 126 and SIGMA_GRID[0] == 10 and SIGMA_GRID[-1] == 200
    assert 100 in SIGMA_GRID and 71 not in SIGMA_GRID
    x = build_x_vals()
    q = compute_q_table(0.84, x, 300)  # rows above 128 use narrower gamma blocks
    assert np.isfinite(q).all()
    for k, i in [(150, 300), (302, 438), (250, 20), (129, 120)]:
        assert q[k, i] == pytest.approx(_q_direct(0.84, k, x[i]), rel=1e-13), (k, i)
    # columns are log-probabilities of the counts 0..k: they sum to <= 1 (tail mass > k_val)
    assert np.all(np.exp(q).sum(0) <= 1 + 1e-9)


def test_cache_roundtrip_and_corrupt(tmp_path):
    t1 = load_or_build_tables(50, 12, tmp_path)
    path = tmp_path / "rctd_q_v2_s50_k12.npz"
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    mtime = path.stat().st_mtime_ns
    t2 = load_or_build_tables(50, 12, tmp_path)
    assert path.stat().st_mtime_ns == mtime
    assert torch.equal(t1.q, t2.q) and torch.equal(t1.sq, t2.sq) and torch.equal(t1.x, t2.x)
    assert t1.q.dtype == torch.float64 and t1.q.shape == (15, 439)
    path.write_bytes(b"not an npz")
    t3 = load_or_build_tables(50, 12, tmp_path)
    assert torch.equal(t1.q, t3.q)
    with np.load(path) as z:
        assert set(z.files) == {"q", "sq", "x"}
    out = tmp_path / "peer.npz"
    save_rctd_py_npz(out, [t1])
    with np.load(out) as z:
        assert set(z.files) == {"Q_50", "X_vals"}
        np.testing.assert_array_equal(z["Q_50"], t1.q.numpy())


# ------------------------------------------------------------------------------ spline


def test_spline_second_derivatives_natural():
    x = np.sort(np.random.default_rng(1).uniform(0, 10, 30))
    q = np.stack([np.sin(x), x**3 - 2 * x, np.exp(-x)])
    m = spline_second_derivatives(q, x)
    assert m.shape == q.shape
    assert np.all(m[:, 0] == 0) and np.all(m[:, -1] == 0)
    h = np.diff(x)
    d = np.diff(q, axis=1) / h
    lhs = h[:-1] * m[:, :-2] + 2 * (h[:-1] + h[1:]) * m[:, 1:-1] + h[1:] * m[:, 2:]
    np.testing.assert_allclose(lhs, 6 * np.diff(d, axis=1), rtol=1e-10, atol=1e-10)


def test_spline_nodes_and_derivatives(tables):
    x = tables.x.numpy()
    ks = torch.arange(0, K_VAL + 1)
    y = ks[:, None].expand(-1, 437)
    lam = tables.x[None, :437].expand(K_VAL + 1, -1).clone()
    d0, d1, d2 = calc_q_all(y, lam, tables)
    torch.testing.assert_close(d0, tables.q[: K_VAL + 1, :437], rtol=0, atol=1e-12)
    torch.testing.assert_close(d2, tables.sq[: K_VAL + 1, :437], rtol=0, atol=1e-12)

    rng = np.random.default_rng(2)
    i = rng.integers(0, 437, 4000)
    u = rng.uniform(0.05, 0.95, 4000)
    lam = torch.from_numpy(x[i] + u * (x[i + 1] - x[i]))
    y = torch.from_numpy(rng.integers(0, K_VAL + 1, 4000))
    d0, d1, d2 = calc_q_all(y, lam, tables)
    eps = 1e-4 * (x[i + 1] - x[i])  # stays inside the interval: a single cubic
    e = torch.from_numpy(eps)
    p0, p1, _ = calc_q_all(y, lam + e, tables)
    m0, m1, _ = calc_q_all(y, lam - e, tables)
    fd1 = (p0 - m0) / (2 * e)
    fd2 = (p0 - 2 * d0 + m0) / e**2
    fd2b = (p1 - m1) / (2 * e)
    torch.testing.assert_close(d1, fd1, rtol=1e-6, atol=1e-6 * d1.abs().max().item())
    torch.testing.assert_close(d2, fd2b, rtol=1e-6, atol=1e-6 * d2.abs().max().item())
    assert torch.allclose(d2, fd2, rtol=1e-2, atol=1e-2 * d2.abs().max().item())

    # continuity of value and slope across the nodes
    lam_l = torch.from_numpy(x[1:437] * (1 - 1e-13))
    lam_r = torch.from_numpy(x[1:437] * (1 + 1e-13))
    yy = torch.full((436,), 7)
    a0, a1, a2 = calc_q_all(yy, lam_l, tables)
    b0, b1, b2 = calc_q_all(yy, lam_r, tables)
    torch.testing.assert_close(a0, b0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(a1, b1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a2, b2, rtol=1e-5, atol=1e-5)


def test_calc_q_all_clipping_and_dtypes(tables):
    lam = torch.tensor([1e-9, 1e-4, 5.0, 1599.9999, 5000.0], dtype=torch.float64)
    y = torch.tensor([0, 3, 1000, -2, 7])
    d0, d1, d2 = calc_q_all(y, lam, tables)
    r0, r1, r2 = calc_q_all(
        torch.tensor([0, 3, K_VAL, 0, 7]),
        torch.tensor([1e-4, 1e-4, 5.0, 1600 - 1e-4, 1600 - 1e-4], dtype=torch.float64),
        tables,
    )
    assert torch.equal(d0, r0) and torch.equal(d1, r1) and torch.equal(d2, r2)
    assert torch.isfinite(d0).all()
    # float32 lam (float counts) -> float32 results close to float64
    f0, f1, f2 = calc_q_all(y.float(), lam.float(), tables)
    assert f0.dtype == torch.float32
    torch.testing.assert_close(f0.double(), d0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f1.double(), d1, rtol=1e-3, atol=1e-3)
    # likelihood peaks near lambda = y for large-ish counts
    lam_grid = torch.linspace(5, 60, 5000, dtype=torch.float64)
    nll = -calc_q_all(torch.full_like(lam_grid, 30), lam_grid, tables)[0]
    assert abs(lam_grid[nll.argmin()].item() - 30) < 3


def test_tables_to(tables):
    t32 = tables.to("cpu", torch.float32)
    assert t32.q.dtype == torch.float32 and t32.k_val == tables.k_val
    assert t32.sigma_x100 == 100
