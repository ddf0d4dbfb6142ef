"""Batched small dense linear algebra for the RCTD per-pixel solver.

* ``psd_project``: project symmetric matrices onto {eigenvalues >= floor}.
* ``solve_box_qp``: ``min 1/2 x^T D x - d^T x  s.t.  x >= lb``: closed forms for K <= 2;
  for K > 2 projected Gauss-Seidel sweeps, and with ``exact`` the problems then failing the
  KKT check are finished by a primal active-set method (as exact as R's
  ``quadprog::solve.QP``; rctd-py 0.4.0 finishes its sweeps the same way).

Every operation acts row by row, so a matrix's result does not depend on the rest of the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "kkt_violation",
    "psd_project",
    "psd_project_with_norm",
    "qp_system",
    "solve_box_qp",
]

# False: the torch code paths (the ones CUDA runs) on the CPU too; tests compare the two
CPU_KERNELS = True
_CUDA_EIGH_BATCH = 16384  # cuSOLVER's batched eigh fails on very large batches
KKT_TOL = {torch.float64: 1e-10, torch.float32: 1e-4}  # D is scaled to spectral norm ~1


def _sanitize(h: torch.Tensor, floor: float) -> torch.Tensor:
    """Symmetrise; matrices holding NaN/Inf become floor * I (no host sync)."""
    h = 0.5 * (h + h.mT)
    bad = ~torch.isfinite(h).all(dim=-1).all(dim=-1)
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    return torch.where(bad[:, None, None], floor * eye, h)


def _batched(fn: Callable, h: torch.Tensor):
    """Apply a batched linalg ``fn``; on CUDA in pieces below cuSOLVER's batch limit."""
    if not h.is_cuda or h.shape[0] <= _CUDA_EIGH_BATCH:
        return fn(h)
    outs = [fn(c) for c in h.split(_CUDA_EIGH_BATCH)]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


def _project_eigh(h: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    evals, evecs = _batched(torch.linalg.eigh, h)
    evals = evals.clamp(min=floor)
    return (evecs * evals.unsqueeze(-2)) @ evecs.mT, evals[:, -1]


def _psd_2x2(h: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed form for symmetric 2x2: f(H) = (f+ + f-)/2 I + (f+ - f-)/(2r) (H - m I)."""
    a, b, c = h[:, 0, 0], h[:, 0, 1], h[:, 1, 1]
    m = 0.5 * (a + c)
    r = torch.hypot(0.5 * (a - c), b)
    lo, hi = m - r, m + r
    f_lo, f_hi = lo.clamp(min=floor), hi.clamp(min=floor)
    untouched = lo >= floor
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    coef = torch.where(r > 0, (f_hi - f_lo) / (2.0 * safe_r), torch.zeros_like(r))
    coef = torch.where(untouched, torch.ones_like(coef), coef)
    base = torch.where(untouched, m, 0.5 * (f_hi + f_lo))
    eye = torch.eye(2, dtype=h.dtype, device=h.device)
    out = base[:, None, None] * eye + coef[:, None, None] * (h - m[:, None, None] * eye)
    return out, f_hi


def psd_project_with_norm(h: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``psd_project`` plus the spectral norm (largest eigenvalue) of the result, shape (B,)."""
    if h.ndim != 3 or h.shape[-1] != h.shape[-2]:
        raise ValueError(f"expected (B, K, K), got {tuple(h.shape)}")
    h = _sanitize(h, floor)
    k = h.shape[-1]
    if k == 1:
        out = h.clamp(min=floor)
        return out, out[:, 0, 0]
    if k == 2:
        return _psd_2x2(h, floor)
    if h.is_cuda:
        return _project_eigh(h, floor)
    # CPU (where batched eigh is slow): matrices with all eigenvalues > floor (Cholesky of
    # H - floor I succeeds) are left as they are and only need their largest eigenvalue; the
    # rest are projected through eigh. The path is chosen per matrix, never per batch.
    eye = torch.eye(k, dtype=h.dtype, device=h.device)
    ok = torch.linalg.cholesky_ex(h - floor * eye).info == 0
    norm = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
    out = h.clone()
    ok_idx = ok.nonzero().squeeze(1)
    bad_idx = (~ok).nonzero().squeeze(1)
    if ok_idx.numel():
        norm[ok_idx] = _batched(torch.linalg.eigvalsh, h[ok_idx])[:, -1]
    if bad_idx.numel():
        out[bad_idx], norm[bad_idx] = _project_eigh(h[bad_idx], floor)
    return out, norm


@functools.cache
def _cpu_system_kernel():
    """Per problem (numba, cached on disk): symmetrise H (a matrix holding NaN/Inf becomes
    floor I), test H - floor I by Cholesky, and for those that pass (left unprojected) take the
    spectral norm by power iteration (relative change < 1e-12) and write D = H / ||H|| + 1e-7 I,
    d = -g / ||H||. The others are flagged, with the symmetrised H in D, for eigh.

    The power iteration is capped at 500 steps: when the two largest eigenvalues nearly
    coincide the norm can be off by up to about their gap. That only rescales the 1e-7 ridge —
    the box QP is otherwise invariant to the common scale of D and d."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def system(h, g, floor, d_mat, d_vec, ok):
        n, k = g.shape
        c = np.empty((k, k), dtype=h.dtype)
        v = np.empty(k, dtype=h.dtype)
        w = np.empty(k, dtype=h.dtype)
        for b in range(n):
            finite = True
            for i in range(k):
                for j in range(k):
                    x = 0.5 * (h[b, i, j] + h[b, j, i])
                    d_mat[b, i, j] = x
                    if not np.isfinite(x):
                        finite = False
            if not finite:
                for i in range(k):
                    for j in range(k):
                        d_mat[b, i, j] = floor if i == j else 0.0
            good = True
            for i in range(k):  # Cholesky of H - floor I (lower triangle)
                for j in range(i + 1):
                    acc = d_mat[b, i, j] - (floor if i == j else 0.0)
                    for m in range(j):
                        acc -= c[i, m] * c[j, m]
                    if i == j:
                        if not acc > 0.0:
                            good = False
                            break
                        c[i, i] = np.sqrt(acc)
                    else:
                        c[i, j] = acc / c[j, j]
                if not good:
                    break
            ok[b] = good
            if not good:
                continue
            for i in range(k):
                v[i] = 1.0
            lam = 0.0
            for _ in range(500):
                nrm = 0.0
                for i in range(k):
                    acc = 0.0
                    for j in range(k):
                        acc += d_mat[b, i, j] * v[j]
                    w[i] = acc
                    nrm += acc * acc
                nrm = np.sqrt(nrm)
                ray = 0.0
                vv = 0.0
                for i in range(k):
                    ray += v[i] * w[i]
                    vv += v[i] * v[i]
                ray /= vv
                for i in range(k):
                    v[i] = w[i] / nrm
                done = abs(ray - lam) <= 1e-12 * abs(ray)
                lam = ray
                if done:
                    break
            for i in range(k):
                for j in range(k):
                    d_mat[b, i, j] = d_mat[b, i, j] / lam + (1e-7 if i == j else 0.0)
                d_vec[b, i] = -g[b, i] / lam

    return system


def qp_system(
    hess: torch.Tensor, grad: torch.Tensor, floor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The IRWLS step's QP ``D = P(H) / ||P(H)|| + 1e-7 I``, ``d = -g / ||P(H)||`` with P the
    projection of :func:`psd_project_with_norm` (batched: H (B, K, K), g (B, K))."""
    k = grad.shape[-1]
    cpu = CPU_KERNELS and hess.device.type == "cpu" and hess.dtype in (torch.float32, torch.float64)
    if not cpu or k <= 2:
        return _scaled(*psd_project_with_norm(hess, floor), grad)
    n = grad.shape[0]
    d_mat = torch.empty_like(hess)
    d_vec = torch.empty_like(grad)
    ok = torch.empty(n, dtype=torch.bool)
    _cpu_system_kernel()(
        hess.contiguous().numpy(), grad.contiguous().numpy(), floor, d_mat.numpy(),
        d_vec.numpy(), ok.numpy(),
    )  # fmt: skip
    bad = (~ok).nonzero().squeeze(1)
    if bad.numel():
        d_mat[bad], d_vec[bad] = _scaled(*_project_eigh(d_mat[bad], floor), grad[bad])
    return d_mat, d_vec


def _scaled(hess: torch.Tensor, norm: torch.Tensor, grad: torch.Tensor):
    """``(H / norm + 1e-7 I, -g / norm)``."""
    eye = torch.eye(hess.shape[-1], dtype=hess.dtype, device=hess.device)
    return hess / norm[:, None, None] + 1e-7 * eye, -grad / norm[:, None]


def psd_project(h: torch.Tensor, floor: float) -> torch.Tensor:
    """Nearest (Frobenius) symmetric matrix with all eigenvalues >= ``floor``, batched (B, K, K).

    Symmetrises first; a matrix containing NaN/Inf is replaced by ``floor * I``. K = 1 and
    K = 2 use closed forms, larger K a batched ``torch.linalg.eigh`` (on CPU only for the
    matrices that need it: the others are returned as they are).
    """
    return psd_project_with_norm(h, floor)[0]


def _sweeps(r: torch.Tensor, z: torch.Tensor, dn_cols: torch.Tensor, sweeps: int) -> torch.Tensor:
    """The Gauss-Seidel sweeps on the coordinate-major state (see ``_gauss_seidel``)."""
    delta = torch.empty_like(z[0])
    for _ in range(sweeps):
        for i in range(r.shape[0]):
            torch.maximum(r[i], z[i], out=delta)
            z[i].sub_(delta)
            r.addcmul_(dn_cols[i], delta, value=-1.0)
    return z


_SCRIPTED: list = []


def _sweeps_fn():
    """``_sweeps`` compiled by TorchScript (same ops, no per-op Python overhead), else plain."""
    if not _SCRIPTED:
        try:
            _SCRIPTED.append(torch.jit.script(_sweeps))
        except Exception:  # no source access, TorchScript unavailable: same results, slower
            _SCRIPTED.append(_sweeps)
    return _SCRIPTED[0]


@functools.cache
def _cpu_gauss_seidel_kernel():
    """Projected Gauss-Seidel, one problem at a time in registers (numba, cached on disk):
    the same moves as ``_sweeps`` (residual r, slack z), problem-major."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def gs(d_mat, d, lb, sweeps, out):
        n, k = d.shape
        r = np.empty(k, dtype=d.dtype)
        z = np.empty(k, dtype=d.dtype)
        dn = np.empty((k, k), dtype=d.dtype)
        for b in range(n):
            for i in range(k):
                out[b, i] = max(d[b, i] / d_mat[b, i, i], lb[b, i])
            for j in range(k):
                acc = d_mat[b, j, 0] * out[b, 0]
                for i in range(1, k):
                    acc += d_mat[b, j, i] * out[b, i]
                r[j] = (d[b, j] - acc) / d_mat[b, j, j]
                z[j] = lb[b, j] - out[b, j]
                for i in range(k):
                    dn[i, j] = d_mat[b, j, i] / d_mat[b, j, j]
            for _ in range(sweeps):
                for i in range(k):
                    delta = max(r[i], z[i])
                    if delta == 0.0:  # held at its bound (or at rest): r - 0 * dn == r
                        continue
                    z[i] -= delta
                    for j in range(k):
                        r[j] -= dn[i, j] * delta
            for i in range(k):
                out[b, i] = lb[b, i] - z[i]

    return gs


def _gauss_seidel(d_mat: torch.Tensor, d: torch.Tensor, lb: torch.Tensor, sweeps: int):
    """Projected Gauss-Seidel from ``max(d / diag(D), lb)``, exactly ``sweeps`` sweeps."""
    k = d.shape[-1]
    if (
        CPU_KERNELS
        and d.device.type == "cpu"
        and k > 1
        and sweeps > 0
        and d.dtype in (torch.float32, torch.float64)
    ):
        out = torch.empty_like(d)
        _cpu_gauss_seidel_kernel()(
            d_mat.contiguous().numpy(), d.contiguous().numpy(), lb.contiguous().numpy(),
            sweeps, out.numpy(),
        )  # fmt: skip
        return out
    diag = d_mat.diagonal(dim1=-2, dim2=-1)
    x = torch.maximum(d / diag, lb)
    if k == 1 or sweeps == 0:  # for K = 1 the warm start is the exact minimiser
        return x
    # Coordinate-major layout (every slice below is contiguous over the batch). Track the scaled
    # residual r_j = (d_j - D_j. x) / D_jj and the slack z = lb - x <= 0; the exact move of
    # coordinate i clipped at its bound is delta = max(x_i + r_i, lb_i) - x_i = max(r_i, z_i),
    # after which z_i -= delta and r_j -= D_ji / D_jj * delta.
    r = ((d - (d_mat * x.unsqueeze(-2)).sum(-1)) / diag).T.contiguous()
    dn_cols = (d_mat / diag.unsqueeze(-1)).permute(2, 1, 0).contiguous()  # [i, j, b] = D_ji/D_jj
    lbt = lb.T.contiguous()
    z = _sweeps_fn()(r, (lbt - x.T).contiguous(), dn_cols, sweeps)
    return (lbt - z).T.contiguous()


def _box_qp_2(d_mat: torch.Tensor, d: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """Exact 2-variable box QP: the interior optimum if feasible, else the better of the two
    one-bound solutions (each clipped at its other bound). D must be positive definite."""
    a, b, c = d_mat[:, 0, 0], d_mat[:, 0, 1], d_mat[:, 1, 1]
    d0, d1, l0, l1 = d[:, 0], d[:, 1], lb[:, 0], lb[:, 1]
    det = a * c - b * b
    u0, u1 = (c * d0 - b * d1) / det, (a * d1 - b * d0) / det
    interior = (u0 >= l0) & (u1 >= l1)
    a1 = torch.maximum((d1 - b * l0) / c, l1)  # x0 at its bound
    b0 = torch.maximum((d0 - b * l1) / a, l0)  # x1 at its bound

    def obj(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return 0.5 * (a * x0 * x0 + 2.0 * b * x0 * x1 + c * x1 * x1) - d0 * x0 - d1 * x1

    first = obj(l0, a1) <= obj(b0, l1)
    x0 = torch.where(interior, u0, torch.where(first, l0, b0))
    x1 = torch.where(interior, u1, torch.where(first, a1, l1))
    return torch.stack([x0, x1], dim=1)


def kkt_violation(d_mat: torch.Tensor, d: torch.Tensor, lb: torch.Tensor, x: torch.Tensor):
    """Per problem: max KKT violation of x (gradient on free coordinates, negative gradient at
    the bound, infeasibility)."""
    g = (d_mat @ x.unsqueeze(-1)).squeeze(-1) - d
    slack = x - lb
    at_bound = slack <= KKT_TOL.get(x.dtype, 1e-10) * (1.0 + lb.abs())
    v = torch.where(at_bound, (-g).clamp(min=0.0), g.abs())
    return torch.maximum(v, (-slack).clamp(min=0.0)).amax(dim=-1)


def _active_set(
    d_mat: torch.Tensor, d: torch.Tensor, lb: torch.Tensor, x: torch.Tensor, tol: float
) -> torch.Tensor:
    """Primal active-set method from a feasible ``x`` (all problems of the batch in lockstep).

    Working set W = coordinates held at their bound. Each step solves the equality problem on
    the free set; if that point leaves the box the step stops at the first bound it meets,
    which joins W; otherwise the most negative multiplier (if any) leaves W. Finite for
    positive definite D; capped at 4K + 4 steps.
    """
    n, k = x.shape
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    x = torch.maximum(x, lb)
    work = x <= lb
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(4 * k + 4):
        free = ~work
        both = free.unsqueeze(-1) & free.unsqueeze(-2)
        m = torch.where(both, d_mat, eye)
        rhs = torch.where(free, d - (d_mat * torch.where(work, lb, 0.0).unsqueeze(-2)).sum(-1), lb)
        sol = torch.linalg.solve_ex(m, rhs)[0]
        ok_sol = torch.isfinite(sol).all(-1)
        step = sol - x
        blocking = free & (sol < lb) & (step < 0)
        ratio = torch.where(blocking, (lb - x) / step, torch.full_like(x, 2.0))
        alpha, j = ratio.min(dim=-1)
        blocked = blocking.any(-1)
        alpha = torch.where(blocked, alpha.clamp(0.0, 1.0), torch.ones_like(alpha))
        active = ~done & ok_sol
        x = torch.where(active.unsqueeze(-1), x + alpha.unsqueeze(-1) * step, x)
        x = torch.maximum(x, lb)
        hit = torch.nn.functional.one_hot(j, k).bool() & (active & blocked).unsqueeze(-1)
        work = work | hit
        x = torch.where(hit, lb, x)
        g = (d_mat @ x.unsqueeze(-1)).squeeze(-1) - d
        mult = torch.where(work, g, torch.zeros_like(g))
        worst, jw = mult.min(dim=-1)
        release = active & ~blocked & (worst < -tol)
        work = work & ~(torch.nn.functional.one_hot(jw, k).bool() & release.unsqueeze(-1))
        done = done | ~ok_sol | (active & ~blocked & ~release)
        if bool(done.all()):
            break
    return x


def solve_box_qp(
    d_mat: torch.Tensor, d: torch.Tensor, lb: torch.Tensor, sweeps: int, exact: bool = False
) -> torch.Tensor:
    """Minimise ``1/2 x^T D x - d^T x`` subject to ``x >= lb``, batched: D (B,K,K), d, lb (B,K).

    K = 1, 2: closed forms. K > 2: projected Gauss-Seidel (cyclic coordinate descent with exact
    1-D minimisation and clipping at the bound), warm-started at ``max(d / diag(D), lb)``, for
    exactly ``sweeps`` sweeps; with ``exact`` the problems whose KKT violation exceeds the
    tolerance are then finished by :func:`_active_set`. Each row's result is independent of
    the other rows. D must be symmetric positive definite.
    """
    k = d.shape[-1]
    if k == 2:
        return _box_qp_2(d_mat, d, lb)
    x = _gauss_seidel(d_mat, d, lb, sweeps)
    if not exact or k == 1 or x.shape[0] == 0:
        return x
    tol = KKT_TOL.get(x.dtype, 1e-10)
    bad = (kkt_violation(d_mat, d, lb, x) > tol).nonzero().squeeze(1)
    if bad.numel():
        x[bad] = _active_set(d_mat[bad], d[bad], lb[bad], x[bad], tol)
    return x
