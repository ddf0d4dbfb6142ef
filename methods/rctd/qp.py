"""Batched small dense linear algebra for the RCTD per-pixel solver.

* ``psd_project``: project symmetric matrices onto {eigenvalues >= floor}.
* ``solve_box_qp``: ``min 1/2 x^T D x - d^T x  s.t.  x >= lb`` by projected Gauss-Seidel.

Every operation acts row by row, so a matrix's result does not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["psd_project", "psd_project_with_norm", "solve_box_qp"]

_CUDA_EIGH_BATCH = 16384  # cuSOLVER's batched eigh fails on very large batches


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


def psd_project(h: torch.Tensor, floor: float) -> torch.Tensor:
    """Nearest (Frobenius) symmetric matrix with all eigenvalues >= ``floor``, batched (B, K, K).

    Symmetrises first; a matrix containing NaN/Inf is replaced by ``floor * I``. K = 1 and
    K = 2 use closed forms, larger K a batched ``torch.linalg.eigh`` (on CPU only for the
    matrices that need it: the others are returned as they are).
    """
    return psd_project_with_norm(h, floor)[0]


def solve_box_qp(
    d_mat: torch.Tensor, d: torch.Tensor, lb: torch.Tensor, sweeps: int
) -> torch.Tensor:
    """Minimise ``1/2 x^T D x - d^T x`` subject to ``x >= lb``, batched: D (B,K,K), d, lb (B,K).

    Projected Gauss-Seidel (cyclic coordinate descent with exact 1-D minimisation and
    clipping at the bound), warm-started at ``max(d / diag(D), lb)``, for exactly ``sweeps``
    sweeps over the K coordinates (no early exit, so each row's result is deterministic and
    independent of the other rows). D must be symmetric with a positive diagonal.
    """
    k = d.shape[-1]
    diag = d_mat.diagonal(dim1=-2, dim2=-1)
    x = torch.maximum(d / diag, lb)
    if k == 1:  # the warm start is the exact minimiser
        return x
    # Coordinate-major layout (every slice below is contiguous over the batch). Track the scaled
    # residual r_j = (d_j - D_j. x) / D_jj and the slack z = lb - x <= 0; the exact move of
    # coordinate i clipped at its bound is delta = max(x_i + r_i, lb_i) - x_i = max(r_i, z_i),
    # after which z_i -= delta and r_j -= D_ji / D_jj * delta.
    r = ((d - (d_mat * x.unsqueeze(-2)).sum(-1)) / diag).T.contiguous()
    dn_cols = (d_mat / diag.unsqueeze(-1)).permute(2, 1, 0).contiguous()  # [i, j, b] = D_ji/D_jj
    lbt = lb.T.contiguous()
    z = lbt - x.T
    delta = torch.empty_like(z[0])
    for _ in range(sweeps):
        for i in range(k):
            torch.maximum(r[i], z[i], out=delta)
            z[i].sub_(delta)
            r.addcmul_(dn_cols[i], delta, value=-1.0)
    return (lbt - z).T.contiguous()
