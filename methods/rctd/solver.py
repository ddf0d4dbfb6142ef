"""Batched RCTD per-pixel solver (IRWLS with a box-constrained QP step), ``constrain=False``.

For each pixel with counts y (G,), total UMI n and profiles P (G, K), starting from w = 1/K:

1. s = max(w, 0); lambda = |n P s| floored at max(1e-4, 1e-7 n);
2. d1, d2 = first/second lambda-derivatives of the spline log-likelihood at (y, lambda);
3. gradient g = -n P^T d1, Hessian H = n^2 P^T diag(-d2) P, projected onto eigenvalues >= floor;
4. with the spectral norm ||H||: D = H / ||H|| + 1e-7 I, d = -g / ||H||;
5. delta = argmin 1/2 delta^T D delta - d^T delta  s.t.  delta >= -s  (projected Gauss-Seidel);
6. w <- s + step * delta; stop once ||w_new - w_old||_1 <= min_change (converged) or after
   max_iter iterations.

Converged pixels leave the working set (active-pixel compaction). Every step acts per pixel,
so a pixel's result does not depend on which other pixels share its batch.
"""

from __future__ import annotations

import torch

from methods.rctd.likelihood import LikelihoodTables, _flat_row_offset, _spline_eval
from methods.rctd.qp import psd_project_with_norm, solve_box_qp

__all__ = ["solve_irwls"]

_CPU_TILE_ELEMS = 2**18


def _grad_hess(
    s: torch.Tensor,
    row_off: torch.Tensor,
    numi_c: torch.Tensor,
    numi2: torch.Tensor,
    lam_floor: torch.Tensor,
    p: torch.Tensor,
    pt: torch.Tensor,
    p_tri: torch.Tensor,
    t: LikelihoodTables,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL gradient (B, K) and packed upper-triangular Hessian (B, K(K+1)/2) at weights s.

    On CPU the (B, G) intermediates are produced in row tiles of ~2^18 elements so they stay
    in cache (the spline evaluation is memory-bound); each row's arithmetic is unchanged.
    """
    n, g = row_off.shape
    grad = torch.empty((n, p.shape[1]), dtype=p.dtype, device=p.device)
    h_tri = torch.empty((n, p_tri.shape[1]), dtype=p.dtype, device=p.device)
    tile = n if p.device.type != "cpu" else max(1, _CPU_TILE_ELEMS // g)
    for a in range(0, n, tile):
        b = min(a + tile, n)
        lam = torch.maximum((s[a:b] @ pt).mul_(numi_c[a:b]).abs_(), lam_floor[a:b])
        _, d1, d2 = _spline_eval(row_off[a:b], lam, t, with_d0=False)
        torch.matmul(d1, p, out=grad[a:b])
        torch.matmul(d2, p_tri, out=h_tri[a:b])
    grad.mul_(numi_c).neg_()  # g = -n P^T d1
    h_tri.mul_(numi2).neg_()  # H = n^2 P^T diag(-d2) P (upper triangle)
    return grad, h_tri


def _solve_chunk(
    row_off: torch.Tensor,
    numi: torch.Tensor,
    p: torch.Tensor,
    p_tri: torch.Tensor,
    tri: torch.Tensor,
    t: LikelihoodTables,
    *,
    max_iter: int,
    min_change: float,
    step: float,
    psd_floor: float,
    qp_sweeps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = row_off.shape[0], p.shape[1]
    dtype, device = p.dtype, p.device
    eye = torch.eye(k, dtype=dtype, device=device)
    pt = p.T.contiguous()

    w_out = torch.full((n, k), 1.0 / k, dtype=dtype, device=device)
    conv_out = torch.zeros(n, dtype=torch.bool, device=device)

    # working (active) set
    idx = torch.arange(n, device=device)
    w = w_out.clone()
    lam_floor = torch.clamp(1e-7 * numi, min=1e-4).unsqueeze(1)
    numi_c = numi.unsqueeze(1)
    numi2 = (numi * numi).unsqueeze(1)
    done = torch.zeros(n, dtype=torch.bool, device=device)

    for it in range(max_iter):
        s = w.clamp(min=0.0)
        grad, h_tri = _grad_hess(s, row_off, numi_c, numi2, lam_floor, p, pt, p_tri, t)
        hess = torch.empty((w.shape[0], k, k), dtype=dtype, device=device)
        hess[:, tri[0], tri[1]] = h_tri
        hess[:, tri[1], tri[0]] = h_tri
        hess, norm = psd_project_with_norm(hess, psd_floor)
        d_mat = hess / norm[:, None, None] + 1e-7 * eye
        d_vec = grad.neg_() / norm[:, None]
        delta = solve_box_qp(d_mat, d_vec, -s, qp_sweeps)
        w_new = s + step * delta
        change = (w_new - w).abs().sum(1)
        w = w_new
        done = change <= min_change
        if it == max_iter - 1:
            break
        n_done = int(done.sum())
        if n_done:
            w_out[idx[done]] = w[done]
            conv_out[idx[done]] = True
            if n_done == w.shape[0]:
                return w_out, conv_out
            keep = ~done
            idx, w, row_off = idx[keep], w[keep], row_off[keep]
            lam_floor, numi_c, numi2 = lam_floor[keep], numi_c[keep], numi2[keep]
    w_out[idx] = w
    conv_out[idx] = done
    return w_out, conv_out


def solve_irwls(
    y: torch.Tensor,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    tables: LikelihoodTables,
    *,
    max_iter: int = 50,
    min_change: float = 1e-3,
    step: float = 0.3,
    psd_floor: float = 1e-3,
    qp_sweeps: int = 50,
    batch_size: int = 10000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit unconstrained RCTD weights for every pixel (full mode, ``constrain=False``).

    Args:
        y: (N, G) counts (any numeric dtype; clipped to [0, k_val] for the likelihood).
        numi: (N,) total UMI per pixel.
        profiles: (G, K) reference profiles; its device and (floating) dtype are used for
            all computation and for the outputs.
        tables: likelihood tables (moved to the profiles' device/dtype here).
        max_iter, min_change, step, psd_floor, qp_sweeps: IRWLS settings (see module doc).
        batch_size: pixels processed together; results do not depend on it.

    Returns:
        weights (N, K) and converged (N,) bool.
    """
    if not profiles.is_floating_point():
        raise TypeError("profiles must be a floating tensor")
    if y.ndim != 2 or profiles.ndim != 2 or y.shape[1] != profiles.shape[0]:
        raise ValueError(f"shape mismatch: y {tuple(y.shape)}, profiles {tuple(profiles.shape)}")
    if numi.shape != (y.shape[0],):
        raise ValueError(f"numi must have shape ({y.shape[0]},), got {tuple(numi.shape)}")
    device, dtype = profiles.device, profiles.dtype
    n, k = y.shape[0], profiles.shape[1]
    p = profiles.contiguous()
    t = tables.to(device, dtype)
    numi = numi.to(device=device, dtype=dtype)
    tri = torch.triu_indices(k, k, device=device)
    p_tri = (p[:, tri[0]] * p[:, tri[1]]).contiguous()  # (G, K(K+1)/2) packed outer products

    weights = torch.empty((n, k), dtype=dtype, device=device)
    converged = torch.empty(n, dtype=torch.bool, device=device)
    bs = max(1, int(batch_size))
    for a in range(0, n, bs):
        b = min(a + bs, n)
        row_off = _flat_row_offset(y[a:b].to(device), t)
        weights[a:b], converged[a:b] = _solve_chunk(
            row_off,
            numi[a:b],
            p,
            p_tri,
            tri,
            t,
            max_iter=max_iter,
            min_change=min_change,
            step=step,
            psd_floor=psd_floor,
            qp_sweeps=qp_sweeps,
        )
    return weights, converged
