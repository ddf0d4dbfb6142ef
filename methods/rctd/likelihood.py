"""RCTD likelihood: the Poisson / heavy-tailed-lognormal table Q and its cubic spline.

Model (rctd.md, "Likelihood"): ``y ~ Poisson(lambda * exp(gamma))`` with ``gamma`` drawn from
``p_sigma(gamma) = ht(gamma / sigma) / sigma``, where ``ht`` is a standard normal density in the
core ``|z| < 3`` with a ``1/(|z| - 7/3)^2`` tail beyond. The log-marginal
``Q[k, i] = log P(Y = k | lambda = x_i)`` is tabulated on a fixed non-uniform lambda grid ``x``
and interpolated in lambda by a natural cubic spline per count ``k``.

Implemented from the equations in ``shared/methods/rctd.md``; no upstream code is used.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "DELTA",
    "GAMMA_MAX",
    "GAMMA_STEP",
    "LAMBDA_MAX",
    "LAMBDA_MIN",
    "LikelihoodTables",
    "build_x_vals",
    "calc_q_all",
    "compute_q_table",
    "ht_log_density",
    "load_or_build_tables",
    "save_rctd_py_npz",
    "spline_second_derivatives",
    "x_index",
]

DELTA = 1e-6  # lambda unit of the index formula: l = floor(sqrt(lambda / DELTA))
LAMBDA_MIN = 1e-4
LAMBDA_MAX = 1600.0 - 1e-4  # lambda is clipped into [LAMBDA_MIN, LAMBDA_MAX]
GAMMA_MAX = 20.0
GAMMA_STEP = 0.004
N_GAMMA = 10001  # gamma grid -20, -19.996, ..., 20

# heavy-tailed density ht(z): C * phi(z) for |z| < 3, C * A_TAIL / (|z| - 7/3)^2 beyond
A_TAIL = (4.0 / 9.0) * math.exp(-4.5) / math.sqrt(2.0 * math.pi)
C_HT = 1.0 / (math.erf(3.0 / math.sqrt(2.0)) + 3.0 * A_TAIL)

_L_MAX = 40100  # integer l range searched for the grid (l(1600) = 40000, next node at 40049)


# --------------------------------------------------------------------------------------------
# lambda grid and index
# --------------------------------------------------------------------------------------------


def _m_of_l(ell: np.ndarray | torch.Tensor):
    """Upstream 1-based grid index m(l) = min(l-9, 40) + max(ceil(sqrt(max(l-48.7499,0)*4))-2, 0).

    Works elementwise on float64 numpy arrays or torch tensors holding integer-valued l.
    """
    if isinstance(ell, torch.Tensor):
        tail = torch.ceil(torch.sqrt(torch.clamp(ell - 48.7499, min=0.0) * 4.0)) - 2.0
        return torch.clamp(ell - 9.0, max=40.0) + torch.clamp(tail, min=0.0)
    tail = np.ceil(np.sqrt(np.maximum(ell - 48.7499, 0.0) * 4.0)) - 2.0
    return np.minimum(ell - 9.0, 40.0) + np.maximum(tail, 0.0)


def build_x_vals() -> np.ndarray:
    """The 439-point lambda grid matching the upstream index formula.

    Derivation: with ``l = floor(sqrt(lambda / 1e-6))`` the index ``m(l)`` (1-based) is a
    non-decreasing step function of the integer ``l``: ``m = l - 9`` for ``10 <= l <= 49``
    (so ``m = 1..40``), and for ``l >= 50`` it grows by one each time
    ``ceil(2 * sqrt(l - 48.7499))`` does. For every index value ``m`` let ``l_min(m)`` be the
    smallest integer ``l`` with ``m(l) = m`` and put the node at ``x_m = l_min(m)^2 * 1e-6``.
    A lambda with ``m(l(lambda)) = m`` then satisfies ``l_min(m) <= l < l_min(m + 1)``, hence
    ``x_m <= lambda < (l + 1)^2 * 1e-6 <= x_{m+1}``: the 0-based index ``m - 1`` brackets
    lambda. Over ``lambda in [1e-4, 1600)`` (``l`` in ``[10, 39999]``) ``m`` takes the values
    1..438; one more node (m = 439, ``l = 40049``, x = 1603.92) closes the last interval,
    giving 439 nodes from ``1e-4`` to ``1603.922401``. ``l_min`` is found by evaluating the
    same float64 formula on every integer ``l``, so grid and index agree by construction.
    """
    l_int = np.arange(10, _L_MAX + 1, dtype=np.float64)
    m = _m_of_l(l_int)
    vals, first = np.unique(m, return_index=True)
    sel = first[vals <= 439]
    x = l_int[sel] ** 2 / 1e6  # correctly rounded l^2 * 1e-6
    assert x.shape == (439,) and np.all(np.diff(x) > 0)
    return x


def x_index(lam: torch.Tensor) -> torch.Tensor:
    """0-based spline interval index of each lambda: ``x[i] <= lambda < x[i + 1]``.

    Evaluates the upstream formula in float64 whatever ``lam``'s dtype (an fp32
    ``floor(sqrt(.))`` misplaces lambdas near the nodes) and clamps into ``[0, 437]``.
    """
    lam64 = lam.to(torch.float64)
    l_val = torch.floor(torch.sqrt(lam64 / DELTA))
    m = _m_of_l(l_val)
    return (m - 1.0).clamp(0.0, 437.0).to(torch.long)


def _index_lut(device: torch.device | str) -> torch.Tensor:
    """x_index as a lookup table over the integer l = 0 .. _L_MAX (same formula, same clamp)."""
    l_int = torch.arange(0, _L_MAX + 1, dtype=torch.float64, device=device)
    return (_m_of_l(l_int) - 1.0).clamp(0.0, 437.0).to(torch.long)


# --------------------------------------------------------------------------------------------
# heavy-tailed density and the Q table
# --------------------------------------------------------------------------------------------


def ht_log_density(z: np.ndarray) -> np.ndarray:
    """log ht(z): normalised, C1-continuous Gaussian core (|z| < 3) with a 1/(|z|-7/3)^2 tail."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    core = -0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)
    tail = math.log(A_TAIL) - 2.0 * np.log(np.maximum(z - 7.0 / 3.0, 1e-300))
    return math.log(C_HT) + np.where(z < 3.0, core, tail)


def _gamma_grid() -> tuple[np.ndarray, np.ndarray]:
    """gamma nodes and trapezoid weights of the integration grid -20..20 step 0.004."""
    gamma = np.linspace(-GAMMA_MAX, GAMMA_MAX, N_GAMMA)
    w = np.full(N_GAMMA, GAMMA_STEP)
    w[0] = w[-1] = 0.5 * GAMMA_STEP
    return gamma, w


def _poisson_windows(k: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval [lo_k, hi_k] in t = log(lambda e^gamma) where k(t - log k + 1) - e^t >= -thresh.

    The left side is the log Poisson pmf at rate e^t minus its maximum over t (the lgamma terms
    cancel); it is concave in t with maximum 0 at t = log k. Found by bisection (k = 0 has no
    left root: lo = -inf).
    """
    k = k.astype(np.float64)
    logk = np.log(np.maximum(k, 1.0))

    def f(t):
        return k * (t - logk + 1.0) - np.exp(t) + thresh

    # left root in [log k - 2 - thresh/k, log k]; right root in [log k, log k + 10]
    lo_a = logk - 2.0 - thresh / np.maximum(k, 1.0)
    lo_b = logk.copy()
    hi_a = np.where(k > 0, logk, math.log(thresh) - 1.0)
    hi_b = np.maximum(logk, 0.0) + 10.0 + math.log(thresh)
    for _ in range(80):
        mid = 0.5 * (lo_a + lo_b)
        neg = f(mid) < 0
        lo_a = np.where(neg, mid, lo_a)
        lo_b = np.where(neg, lo_b, mid)
        mid = 0.5 * (hi_a + hi_b)
        neg = f(mid) < 0
        hi_b = np.where(neg, mid, hi_b)
        hi_a = np.where(neg, hi_a, mid)
    lo = np.where(k > 0, lo_a, -np.inf)
    return lo, hi_b


def _gamma_range(g_lo: float, g_hi: float) -> tuple[int, int]:
    """Slice [ja, jb) of the gamma grid covering [g_lo, g_hi] with one node of margin."""
    ja = 0 if not math.isfinite(g_lo) else math.floor((g_lo + GAMMA_MAX) / GAMMA_STEP) - 1
    jb = N_GAMMA if not math.isfinite(g_hi) else math.ceil((g_hi + GAMMA_MAX) / GAMMA_STEP) + 2
    ja, jb = max(ja, 0), min(jb, N_GAMMA)
    return (ja, jb) if jb > ja else (0, N_GAMMA)


def _k_blocks(lo_t: np.ndarray, hi_t: np.ndarray, max_elems: int) -> list[tuple[int, int]]:
    """Greedy consecutive row groups whose (rows x union-window nodes) stays <= max_elems."""

    def width(a: int, b: int) -> float:
        return min(N_GAMMA, (hi_t[a:b].max() - lo_t[a:b].min()) / GAMMA_STEP + 4)

    blocks, ka, n = [], 0, len(lo_t)
    while ka < n:
        kb = ka + 1
        while kb < n and (kb + 1 - ka) * width(ka, kb + 1) <= max_elems:
            kb += 1
        blocks.append((ka, kb))
        ka = kb
    return blocks


def compute_q_table(
    sigma: float,
    x: np.ndarray,
    k_val: int,
    device: torch.device | str = "cpu",
    *,
    window_thresh: float | None = 100.0,
) -> np.ndarray:
    """Q[k, i] = log of the trapezoid integral of Poisson(k; x_i e^gamma) p_sigma(gamma) dgamma.

    Shape (k_val + 3, len(x)), float64, k = 0 .. k_val + 2; gamma grid -20..20 step 0.004.
    Evaluated in log space with an analytic shift: for every k the exponent
    ``k(log x + gamma) - x e^gamma - lgamma(k+1) + log(w_j p_sigma(gamma_j))`` is at most
    ``c_k = k log k - k - lgamma(k+1) + max_j log(w_j p_j)``, so
    ``Q = c_k + log sum_j exp(exponent - c_k)`` never overflows, and it cannot underflow
    either (the term nearest the Poisson peak is within ~20 of c_k for sigma >= 0.1).

    ``window_thresh``: gamma nodes where the Poisson factor is below ``exp(-window_thresh)``
    of its maximum are skipped, blockwise over (k, x); with the default 100 the dropped mass is
    below e^-70 relative (the kept sum is >= e^-21 of the bound). ``None`` integrates every
    node (slow reference path).
    """
    x = np.asarray(x, dtype=np.float64)
    n_k = k_val + 3
    gamma_np, w_np = _gamma_grid()
    logw_np = np.log(w_np) + ht_log_density(gamma_np / sigma) - math.log(sigma)
    logw_max = float(logw_np.max())

    k_np = np.arange(n_k, dtype=np.float64)
    # c_k without the max log-weight: k log k - k - lgamma(k+1)  (0 for k = 0)
    klogk = np.where(k_np > 0, k_np * np.log(np.maximum(k_np, 1.0)) - k_np, 0.0)
    lgam = np.array([math.lgamma(v + 1.0) for v in k_np])
    c_k = klogk - lgam + logw_max

    dev = torch.device(device)
    f64 = torch.float64
    gamma = torch.as_tensor(gamma_np, dtype=f64, device=dev)
    egam = torch.exp(gamma)
    logw_rel = torch.as_tensor(logw_np - logw_max, dtype=f64, device=dev)
    kk = torch.as_tensor(k_np, dtype=f64, device=dev)
    neg_klogk = torch.as_tensor(-klogk, dtype=f64, device=dev)
    xt = torch.as_tensor(x, dtype=f64, device=dev)
    logx = torch.log(xt)
    logsum = torch.empty(n_k, len(x), dtype=f64, device=dev)

    # blocks over (k, x), small enough to stay in cache; each integrates over the union of its
    # rows' gamma windows (the whole grid when window_thresh is None)
    if window_thresh is None:
        lo_t = np.full(n_k, -np.inf)
        hi_t = np.full(n_k, np.inf)
    else:
        lo_t, hi_t = _poisson_windows(k_np, window_thresh)
    if dev.type == "cpu":  # cache-sized blocks: single x, k rows grouped by window width
        k_blocks = _k_blocks(lo_t, hi_t, max_elems=2**17)
        xb_size = 1
    else:
        k_blocks = [(0, n_k)]
        xb_size = max(1, 2**27 // (n_k * N_GAMMA))
    logx_np = np.log(x)
    for ka, kb in k_blocks:
        lo_blk, hi_blk = float(lo_t[ka:kb].min()), float(hi_t[ka:kb].max())
        for xa in range(0, len(x), xb_size):
            xb = min(xa + xb_size, len(x))
            ja, jb = _gamma_range(lo_blk - logx_np[xb - 1], hi_blk - logx_np[xa])
            u = logx[xa:xb, None] + gamma[None, ja:jb]  # (xb, J) log rate
            b = logw_rel[None, ja:jb] - xt[xa:xb, None] * egam[None, ja:jb]
            e = b.unsqueeze(0) + neg_klogk[ka:kb, None, None]
            e.addcmul_(kk[ka:kb, None, None], u.unsqueeze(0))  # k*u - x e^g - (klogk-k) + logw
            e.clamp_(min=-700.0)  # exp(-700) ~ 1e-304: avoids slow denormals, changes nothing
            logsum[ka:kb, xa:xb] = torch.log(torch.exp_(e).sum(-1))
    return (logsum + torch.as_tensor(c_k, dtype=f64, device=dev)[:, None]).cpu().numpy()


# --------------------------------------------------------------------------------------------
# spline
# --------------------------------------------------------------------------------------------


def spline_second_derivatives(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Natural cubic spline second derivatives of every row of ``q`` over nodes ``x``.

    Solves ``h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i) M_i + h_i M_{i+1} = 6 (D_i - D_{i-1})`` with
    ``D_i = (q_{i+1} - q_i) / h_i`` for the interior nodes, ``M_0 = M_{n-1} = 0``.
    """
    q = np.asarray(q, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    squeeze = q.ndim == 1
    q2 = np.atleast_2d(q)
    h = np.diff(x)
    slope = np.diff(q2, axis=1) / h
    rhs = 6.0 * np.diff(slope, axis=1)  # (R, n-2)
    n_in = len(x) - 2
    ab = np.zeros((3, n_in))
    ab[0, 1:] = h[1:-1]
    ab[1] = 2.0 * (h[:-1] + h[1:])
    ab[2, :-1] = h[1:-1]
    m_in = scipy.linalg.solve_banded((1, 1), ab, rhs.T)  # (n-2, R)
    out = np.zeros_like(q2)
    out[:, 1:-1] = m_in.T
    return out[0] if squeeze else out


# --------------------------------------------------------------------------------------------
# tables, cache
# --------------------------------------------------------------------------------------------


@dataclass
class LikelihoodTables:
    """Q table, its spline second derivatives and the lambda grid, as torch tensors."""

    q: torch.Tensor  # (k_val + 3, n_x)
    sq: torch.Tensor  # (k_val + 3, n_x)
    x: torch.Tensor  # (n_x,)
    sigma_x100: int
    k_val: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LikelihoodTables:
        """Copy onto ``device`` / ``dtype`` (either may be None to keep it).

        The evaluation coefficients are derived at this object's precision before the cast.
        """
        out = LikelihoodTables(
            q=self.q.to(device=device, dtype=dtype),
            sq=self.sq.to(device=device, dtype=dtype),
            x=self.x.to(device=device, dtype=dtype),
            sigma_x100=self.sigma_x100,
            k_val=self.k_val,
        )
        for name, v in self.coefficients().items():
            cast = dtype if v.is_floating_point() else None
            out._cache[name] = v.to(device=device, dtype=cast)
        return out

    def coefficients(self) -> dict[str, torch.Tensor]:
        """Flat per-(k, i) power-form coefficients of the spline piece on [x_i, x_i+1] (cached).

        With ``u = lambda - x_i``: ``S = q + u (c1 + u (sq / 2 + e u / 6))``,
        ``S' = c1 + u (sq + e u / 2)``, ``S'' = sq + e u``, where
        ``c1 = (q_i+1 - q_i) / h - h (2 sq_i + sq_i+1) / 6`` and ``e = (sq_i+1 - sq_i) / h``.
        Keys: ``q``, ``sq``, ``c1``, ``e`` (flat, index ``k * n_x + i``), ``x0`` (n_x,) and
        ``lut`` (the l -> interval index table).
        """
        if "c1" not in self._cache:
            q, sq, x = self.q, self.sq, self.x
            h = torch.diff(x, append=x[-1:] + 1.0)  # last column is never used
            dq = torch.diff(q, dim=1, append=q[:, -1:])
            dsq = torch.diff(sq, dim=1, append=sq[:, -1:])
            nxt_sq = sq + dsq
            c1 = dq / h - h * (2.0 * sq + nxt_sq) / 6.0
            self._cache.update(
                q=q.reshape(-1).contiguous(),
                sq=sq.reshape(-1).contiguous(),
                c1=c1.reshape(-1).contiguous(),
                e=(dsq / h).reshape(-1).contiguous(),
                x0=x.contiguous(),
                lut=_index_lut(x.device),
            )
        return self._cache


def _cache_path(cache_dir: Path, sigma_x100: int, k_val: int) -> Path:
    return Path(cache_dir) / f"rctd_q_s{sigma_x100}_k{k_val}.npz"


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _try_load(path: Path, k_val: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as z:
            q, sq, x = z["q"], z["sq"], z["x"]
    except Exception:
        return None
    shape = (k_val + 3, 439)
    ok = (
        q.shape == shape
        and sq.shape == shape
        and x.shape == (439,)
        and np.isfinite(q).all()
        and np.isfinite(sq).all()
        and np.array_equal(x, build_x_vals())
    )
    return (q, sq, x) if ok else None


def load_or_build_tables(
    sigma_x100: int, k_val: int, cache_dir: Path, device: torch.device | str = "cpu"
) -> LikelihoodTables:
    """Tables for sigma = sigma_x100 / 100, from ``cache_dir/rctd_q_s{s}_k{k}.npz`` if valid.

    A missing or unreadable/inconsistent cache file is (re)built, on ``device``, and written
    atomically. The returned tensors are CPU float64; move them with ``.to()``.
    """
    path = _cache_path(Path(cache_dir), sigma_x100, k_val)
    loaded = _try_load(path, k_val) if path.exists() else None
    if loaded is None:
        x = build_x_vals()
        q = compute_q_table(sigma_x100 / 100.0, x, k_val, device=device)
        sq = spline_second_derivatives(q, x)
        _atomic_savez(path, q=q, sq=sq, x=x)
    else:
        q, sq, x = loaded
    return LikelihoodTables(
        q=torch.from_numpy(np.ascontiguousarray(q, dtype=np.float64)),
        sq=torch.from_numpy(np.ascontiguousarray(sq, dtype=np.float64)),
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)),
        sigma_x100=int(sigma_x100),
        k_val=int(k_val),
    )


def save_rctd_py_npz(path: Path, tables_list: list[LikelihoodTables]) -> None:
    """Write tables in rctd-py's ``q_matrices.npz`` layout: ``Q_<sigma_x100>`` and ``X_vals``."""
    if not tables_list:
        raise ValueError("no tables to save")
    x = tables_list[0].x.detach().cpu().to(torch.float64).numpy()
    arrays = {"X_vals": x}
    for t in tables_list:
        if not np.array_equal(t.x.detach().cpu().to(torch.float64).numpy(), x):
            raise ValueError("tables use different lambda grids")
        arrays[f"Q_{t.sigma_x100}"] = t.q.detach().cpu().to(torch.float64).numpy()
    _atomic_savez(Path(path), **arrays)


# --------------------------------------------------------------------------------------------
# spline evaluation
# --------------------------------------------------------------------------------------------


def _flat_row_offset(y: torch.Tensor, t: LikelihoodTables) -> torch.Tensor:
    """Row offsets ``clip(y, 0, k_val) * n_x`` (long) for the flat gather."""
    return torch.clamp(y, 0, t.k_val).to(torch.long) * t.x.shape[0]


def _spline_eval(
    row_off: torch.Tensor, lam: torch.Tensor, t: LikelihoodTables, with_d0: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Spline value / first / second derivative at (row_off, lam); ``t`` in lam's dtype."""
    c = t.coefficients()
    shape = lam.shape
    lam = torch.clamp(lam.reshape(-1), LAMBDA_MIN, LAMBDA_MAX)
    # l = floor(sqrt(lam / 1e-6)) in float64 (truncation == floor: the argument is positive)
    l_val = torch.sqrt(lam.to(torch.float64) / DELTA).to(torch.long).clamp_(max=_L_MAX)
    i = c["lut"].index_select(0, l_val)
    flat = row_off.reshape(-1) + i
    u = lam - c["x0"].index_select(0, i)
    sq = c["sq"].index_select(0, flat)
    e = c["e"].index_select(0, flat)
    c1 = c["c1"].index_select(0, flat)
    d2 = torch.addcmul(sq, e, u)
    d1 = torch.addcmul(c1, torch.addcmul(sq, e, u, value=0.5), u)
    d0 = None
    if with_d0:
        q = c["q"].index_select(0, flat)
        d0 = torch.addcmul(
            q, torch.addcmul(c1, torch.addcmul(sq, e, u, value=1.0 / 3.0), u, value=0.5), u
        )
        d0 = d0.reshape(shape)
    return d0, d1.reshape(shape), d2.reshape(shape)


def calc_q_all(
    y: torch.Tensor, lam: torch.Tensor, t: LikelihoodTables
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spline log-likelihood ``d0 = log P(y | lam)`` and its first/second lambda derivatives.

    ``y`` (counts, any dtype) is clipped to ``[0, k_val]``, ``lam`` to ``[1e-4, 1600 - 1e-4]``;
    shapes broadcast. Results are in ``lam``'s dtype (tables are cast if needed). NLL = -sum d0.
    """
    if not lam.is_floating_point():
        lam = lam.to(t.q.dtype)
    if t.q.dtype != lam.dtype or t.q.device != lam.device:
        t = t.to(lam.device, lam.dtype)
    y, lam = torch.broadcast_tensors(y.to(lam.device), lam)
    d0, d1, d2 = _spline_eval(_flat_row_offset(y, t), lam, t, with_d0=True)
    assert d0 is not None
    return d0, d1, d2
