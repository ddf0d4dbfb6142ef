"""RCTD likelihood: the Poisson / heavy-tailed-lognormal table Q and its cubic spline.

Model (rctd.md, "Likelihood"): ``y ~ Poisson(lambda * exp(gamma))`` with ``gamma`` drawn from
``p_sigma(gamma) = ht(gamma / sigma) / sigma``, where ``ht`` is a standard normal density in the
core ``|z| < 3`` with a ``1/(|z| - 7/3)^2`` tail beyond. The log-marginal
``Q[k, i] = log P(Y = k | lambda = x_i)`` is tabulated on a fixed non-uniform lambda grid ``x``
and interpolated in lambda by a natural cubic spline per count ``k``.

Implemented from the equations in ``shared/methods/rctd.md``; no upstream code is used.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "DELTA",
    "LAMBDA_MAX",
    "LAMBDA_MIN",
    "LikelihoodTables",
    "build_x_vals",
    "calc_q_all",
    "ht_log_density",
    "spline_second_derivatives",
    "x_index",
]

DELTA = 1e-6  # lambda unit of the index formula: l = floor(sqrt(lambda / DELTA))
LAMBDA_MIN = 1e-4
LAMBDA_MAX = 1600.0 - 1e-4  # lambda is clipped into [LAMBDA_MIN, LAMBDA_MAX]
# heavy-tailed density ht(z): C * phi(z) for |z| < 3, C * A_TAIL / (|z| - 7/3)^2 beyond
A_TAIL = (4.0 / 9.0) * math.exp(-4.5) / math.sqrt(2.0 * math.pi)
C_HT = 1.0 / (math.erf(3.0 / math.sqrt(2.0)) + 3.0 * A_TAIL)

_L_MAX = 40100  # integer l range searched for the grid (l(1600) = 40000)


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
    1..438; the last node is 1600 (upstream's grid maximum: lambda is clipped at 1600 - 1e-4,
    so ``[x_437, 1600]`` brackets every clipped lambda), giving 439 nodes from ``1e-4`` to
    ``1600``. ``l_min`` is found by evaluating the same float64 formula on every integer ``l``,
    so grid and index agree by construction.
    """
    l_int = np.arange(10, _L_MAX + 1, dtype=np.float64)
    m = _m_of_l(l_int)
    vals, first = np.unique(m, return_index=True)
    sel = first[vals <= 438]
    x = np.append(l_int[sel] ** 2 / 1e6, 1600.0)  # correctly rounded l^2 * 1e-6
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


@functools.lru_cache(maxsize=8)
def _index_lut(device: torch.device | str) -> torch.Tensor:
    """x_index as a lookup table over the integer l = 0 .. _L_MAX (same formula, same clamp)."""
    l_int = torch.arange(0, _L_MAX + 1, dtype=torch.float64, device=device)
    return (_m_of_l(l_int) - 1.0).clamp(0.0, 437.0).to(torch.long)


# --------------------------------------------------------------------------------------------
# heavy-tailed density
# --------------------------------------------------------------------------------------------


def ht_log_density(z: np.ndarray) -> np.ndarray:
    """log ht(z): normalised, C1-continuous Gaussian core (|z| < 3) with a 1/(|z|-7/3)^2 tail."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    core = -0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)
    tail = math.log(A_TAIL) - 2.0 * np.log(np.maximum(z - 7.0 / 3.0, 1e-300))
    return math.log(C_HT) + np.where(z < 3.0, core, tail)


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
                lut=_index_lut(str(x.device)),
            )
        return self._cache


# --------------------------------------------------------------------------------------------
# spline evaluation
# --------------------------------------------------------------------------------------------


def _flat_row_offset(y: torch.Tensor, t: LikelihoodTables) -> torch.Tensor:
    """Row offsets ``clip(y, 0, k_val) * n_x`` (long) for the flat gather."""
    return torch.clamp(y, 0, t.k_val).to(torch.long) * t.x.shape[0]


# False: the torch code paths (the ones CUDA runs) on the CPU too; tests compare the two
CPU_KERNELS = True


@functools.cache
def _cpu_spline_kernel():
    """The fused CPU spline pass (numba, compiled once and cached on disk): clamp, index,
    one gather per coefficient and the power-form evaluation in one pass over the entries."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def spline(row_off, lam, lut, x0, q, sq, c1, e, d0, d1, d2, with_d0, lo, hi, l_max):
        third = 1.0 / 3.0
        for j in range(lam.shape[0]):
            v = min(max(lam[j], lo), hi)
            ell = int(math.sqrt(np.float64(v) / DELTA))
            ell = min(max(ell, 0), l_max)
            i = lut[ell]
            f = row_off[j] + i
            u = v - x0[i]
            s = sq[f]
            ee = e[f]
            d2[j] = s + ee * u
            d1[j] = c1[f] + (s + 0.5 * ee * u) * u
            if with_d0:
                d0[j] = q[f] + (c1[f] + 0.5 * (s + third * ee * u) * u) * u

    return spline


def _spline_eval_cpu(
    row_off: torch.Tensor, lam: torch.Tensor, t: LikelihoodTables, with_d0: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    c = t.coefficients()
    shape = lam.shape
    lam_f = lam.reshape(-1).contiguous()
    d1 = torch.empty_like(lam_f)
    d2 = torch.empty_like(lam_f)
    d0 = torch.empty_like(lam_f) if with_d0 else d1
    np_dt = lam_f.numpy().dtype.type
    _cpu_spline_kernel()(
        row_off.reshape(-1).contiguous().numpy(), lam_f.numpy(), c["lut"].numpy(),
        c["x0"].numpy(), c["q"].numpy(), c["sq"].numpy(), c["c1"].numpy(), c["e"].numpy(),
        d0.numpy(), d1.numpy(), d2.numpy(), with_d0, np_dt(LAMBDA_MIN), np_dt(LAMBDA_MAX),
        _L_MAX,
    )  # fmt: skip
    out0 = d0.reshape(shape) if with_d0 else None
    return out0, d1.reshape(shape), d2.reshape(shape)


def _spline_eval(
    row_off: torch.Tensor, lam: torch.Tensor, t: LikelihoodTables, with_d0: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Spline value / first / second derivative at (row_off, lam); ``t`` in lam's dtype.
    On the CPU one fused numba pass; elsewhere torch ops (the same arithmetic)."""
    if CPU_KERNELS and lam.device.type == "cpu" and lam.dtype in (torch.float32, torch.float64):
        return _spline_eval_cpu(row_off, lam, t, with_d0)
    return _spline_eval_torch(row_off, lam, t, with_d0)


def _spline_eval_torch(
    row_off: torch.Tensor, lam: torch.Tensor, t: LikelihoodTables, with_d0: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``_spline_eval`` by torch ops (any device)."""
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
