"""Batched RCTD per-pixel solver (IRWLS with a box-constrained QP step), ``constrain=False``.

For each problem with counts y (G,), total UMI n and design profiles P (G, k), from w = 1/k:

1. s = max(w, 0); lambda = |n P s| floored at max(1e-4, 1e-7 n);
2. d1, d2 = first/second lambda-derivatives of the spline log-likelihood at (y, lambda);
3. gradient g = -n P^T d1, Hessian H = n^2 P^T diag(-d2) P, projected onto eigenvalues >= floor;
4. with the spectral norm ||H||: D = H / ||H|| + 1e-7 I, d = -g / ||H||;
5. delta = argmin 1/2 delta^T D delta - d^T delta  s.t.  delta >= -s  (exact box QP);
6. w <- s + step * delta; stop once ||w_new - w_old||_1 <= min_change (converged) or after
   max_iter iterations.

Two designs share this loop: :func:`solve_irwls` (full mode: every pixel uses all K profiles)
and :func:`solve_subsets` (doublet / multi sub-fits: each task is a pixel and a list of k type
indices, k = 1, 2, ...; optionally scored by its NLL). Converged problems leave the working
set (active compaction). Every step acts per problem, so a result does not depend on which
other problems share its batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from methods.rctd.likelihood import LikelihoodTables, _flat_row_offset, _spline_eval
from methods.rctd.qp import qp_system, solve_box_qp

__all__ = ["Design", "irwls", "solve_irwls", "solve_subsets", "subset_nll", "tile_elems"]

_CPU_TILE_ELEMS = 2**18  # (rows x genes) per tile on CPU: keeps the spline gathers in cache
_GPU_TILE_ELEMS = 2**26


def tile_elems(device: torch.device) -> int:
    """(rows x genes) elements per tile of the spline pass on this device."""
    return _CPU_TILE_ELEMS if device.type == "cpu" else _GPU_TILE_ELEMS


def _tile_rows(n_genes: int, device: torch.device, per_row: int = 1) -> int:
    return max(1, tile_elems(device) // max(1, n_genes * per_row))


class Design(Protocol):
    """A batch of IRWLS problems: NLL gradient / Hessian at weights s, and a row subset."""

    def grad_hess(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def take(self, keep: torch.Tensor) -> Design: ...


class _Shared:
    """All problems use the same profiles P (G, K): full mode."""

    def __init__(
        self,
        row_off: torch.Tensor,  # (n, G) flat row offsets of the clipped counts
        numi: torch.Tensor,  # (n,)
        p: torch.Tensor,  # (G, K) profiles
        pt: torch.Tensor,  # (K, G) = P^T, contiguous
        p_tri: torch.Tensor,  # (G, K(K+1)/2) packed outer products P_gi P_gj, i <= j
        tri: torch.Tensor,  # (2, K(K+1)/2) their (i, j)
        t: LikelihoodTables,
    ) -> None:
        self.row_off, self.numi, self.p, self.pt = row_off, numi, p, pt
        self.p_tri, self.tri, self.t = p_tri, tri, t
        self.lam_floor = torch.clamp(1e-7 * numi, min=1e-4).unsqueeze(1)

    def take(self, keep: torch.Tensor) -> _Shared:
        return _Shared(
            self.row_off[keep], self.numi[keep], self.p, self.pt, self.p_tri, self.tri, self.t
        )

    def grad_hess(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, g = self.row_off.shape
        k = self.p.shape[1]
        p, dtype = self.p, self.p.dtype
        grad = torch.empty((n, k), dtype=dtype, device=p.device)
        h_tri = torch.empty((n, self.p_tri.shape[1]), dtype=dtype, device=p.device)
        numi_c = self.numi.unsqueeze(1)
        tile = _tile_rows(g, p.device)
        for a in range(0, n, tile):
            b = min(a + tile, n)
            lam = torch.maximum((s[a:b] @ self.pt).mul_(numi_c[a:b]).abs_(), self.lam_floor[a:b])
            _, d1, d2 = _spline_eval(self.row_off[a:b], lam, self.t, with_d0=False)
            torch.matmul(d1, p, out=grad[a:b])
            torch.matmul(d2, self.p_tri, out=h_tri[a:b])
        grad.mul_(numi_c).neg_()  # g = -n P^T d1
        h_tri.mul_(numi_c * numi_c).neg_()  # H = n^2 P^T diag(-d2) P (upper triangle)
        hess = torch.empty((n, k, k), dtype=dtype, device=p.device)
        hess[:, self.tri[0], self.tri[1]] = h_tri
        hess[:, self.tri[1], self.tri[0]] = h_tri
        return grad, hess


class _Subsets:
    """Task j = (pixel pix[j], types types[j] (k,)): profiles P[:, types[j]]."""

    def __init__(
        self,
        row_off: torch.Tensor,  # (N_pix, G) flat row offsets of the pixels' clipped counts
        numi: torch.Tensor,  # (N_pix,)
        pt: torch.Tensor,  # (K, G) = P^T, contiguous
        pix: torch.Tensor,  # (T,) pixel of each task
        types: torch.Tensor,  # (T, k) type indices of each task
        t: LikelihoodTables,
    ) -> None:
        self.row_off, self.numi, self.pt, self.t = row_off, numi, pt, t
        self.pix, self.types = pix, types

    def take(self, keep: torch.Tensor) -> _Subsets:
        return _Subsets(self.row_off, self.numi, self.pt, self.pix[keep], self.types[keep], self.t)

    def _tiles(self) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """Row tiles: (start, stop, gathered profiles (t, k, G), row offsets (t, G))."""
        n, k = self.types.shape
        tile = _tile_rows(self.pt.shape[1], self.pt.device, per_row=k + 1)
        for a in range(0, n, tile):
            b = min(a + tile, n)
            yield a, b, self.pt[self.types[a:b]], self.row_off[self.pix[a:b]]

    def grad_hess(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = self.types.shape
        dtype, device = self.pt.dtype, self.pt.device
        grad = torch.empty((n, k), dtype=dtype, device=device)
        hess = torch.empty((n, k, k), dtype=dtype, device=device)
        numi = self.numi[self.pix]
        for a, b, pt, ro in self._tiles():
            nu = numi[a:b, None]
            lam = torch.bmm(s[a:b, None, :], pt).squeeze(1).mul_(nu).abs_()
            lam = torch.maximum(lam, torch.clamp(1e-7 * nu, min=1e-4))
            _, d1, d2 = _spline_eval(ro, lam, self.t, with_d0=False)
            grad[a:b] = torch.bmm(pt, d1.unsqueeze(-1)).squeeze(-1)
            hess[a:b] = torch.bmm(pt * d2.unsqueeze(1), pt.transpose(1, 2))
        grad.mul_(numi[:, None]).neg_()
        hess.mul_((numi * numi)[:, None, None]).neg_()
        return grad, hess

    def nll(self, w: torch.Tensor) -> torch.Tensor:
        """-sum_g log P(y_g | n P_sub w) per task (lambda clipped inside the spline only)."""
        out = torch.empty(w.shape[0], dtype=w.dtype, device=w.device)
        numi = self.numi[self.pix]
        for a, b, pt, ro in self._tiles():
            lam = torch.bmm(w[a:b, None, :], pt).squeeze(1).mul_(numi[a:b, None])
            d0, _, _ = _spline_eval(ro, lam, self.t, with_d0=True)
            assert d0 is not None
            out[a:b] = -d0.sum(1)
        return out


def irwls(
    design: Design,
    n: int,
    k: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    max_iter: int,
    min_change: float,
    step: float,
    psd_floor: float,
    qp_sweeps: int,
    qp_exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The IRWLS loop over ``n`` problems of ``k`` weights; returns weights and converged."""
    w_out = torch.full((n, k), 1.0 / k, dtype=dtype, device=device)
    conv_out = torch.zeros(n, dtype=torch.bool, device=device)
    if n == 0:
        return w_out, conv_out
    idx = torch.arange(n, device=device)
    w = w_out.clone()
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for it in range(max_iter):
        s = w.clamp(min=0.0)
        grad, hess = design.grad_hess(s)
        d_mat, d_vec = qp_system(hess, grad, psd_floor)
        delta = solve_box_qp(d_mat, d_vec, -s, qp_sweeps, exact=qp_exact)
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
            idx, w, design = idx[keep], w[keep], design.take(keep)
    w_out[idx] = w
    conv_out[idx] = done
    return w_out, conv_out


def _dense_rows(y: Any, a: int, b: int, device: torch.device) -> torch.Tensor:
    """Rows a..b of the counts as a dense tensor on the device (a CSR matrix: only these)."""
    if isinstance(y, torch.Tensor):
        return y[a:b].to(device)
    return torch.as_tensor(y[a:b].toarray(), device=device)


@dataclass
class FitMemo:
    """Full-mode fits of some rows, handed from sigma estimation to the main fit of the same
    run: its last epoch fits the picked pixels at the sigma it returns, which the main fit
    would repeat row for row (each row's result depends on its batch only through BLAS
    summation order: last-bit differences, 2.2e-16 measured). Used at most once,
    and only when the tables, profiles, settings and every picked row's counts and nUMI are
    equal to the main fit's."""

    rows: torch.Tensor  # (m,) row indices into the main fit's counts
    y: torch.Tensor  # (m, G) their counts
    numi: torch.Tensor  # (m,)
    profiles: torch.Tensor
    tables: LikelihoodTables
    settings: dict
    weights: torch.Tensor
    converged: torch.Tensor


_MEMO: list[FitMemo] = []


def remember_fit(memo: FitMemo) -> None:
    """Offer ``memo`` to the next ``solve_irwls`` call (replacing an unused one)."""
    _MEMO.clear()
    _MEMO.append(memo)


def _take_memo(
    y: Any, numi: torch.Tensor, profiles: torch.Tensor, tables: LikelihoodTables, settings: dict
) -> FitMemo | None:
    """The offered memo if it applies to this call (module doc of ``FitMemo``), else None."""
    if not _MEMO:
        return None
    memo = _MEMO.pop()
    if memo.tables is not tables or memo.settings != settings:
        return None
    if memo.profiles.shape != profiles.shape or not torch.equal(memo.profiles, profiles):
        return None
    if memo.rows.numel() == 0 or int(memo.rows.max()) >= y.shape[0]:
        return None
    rows = memo.rows.cpu().numpy()
    sub = y[memo.rows] if isinstance(y, torch.Tensor) else torch.as_tensor(y[rows].toarray())
    sub = sub.to(device=memo.y.device, dtype=memo.y.dtype)
    if not torch.equal(sub, memo.y) or not torch.equal(numi[memo.rows.to(numi.device)], memo.numi):
        return None
    return memo


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
    qp_exact: bool = False,
    batch_size: int = 10000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit unconstrained RCTD weights for every pixel (full mode, ``constrain=False``).

    Args:
        y: (N, G) counts (any numeric dtype; clipped to [0, k_val] for the likelihood), a
            tensor or a scipy CSR matrix (densified one batch at a time).
        numi: (N,) total UMI per pixel.
        profiles: (G, K) reference profiles; its device and (floating) dtype are used for
            all computation and for the outputs.
        tables: likelihood tables (moved to the profiles' device/dtype here).
        max_iter, min_change, step, psd_floor, qp_sweeps: IRWLS settings (see module doc).
        qp_exact: finish QPs failing the KKT check exactly (``solve_box_qp``).
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
    pt = p.T.contiguous()
    settings = dict(
        max_iter=max_iter, min_change=min_change, step=step, psd_floor=psd_floor,
        qp_sweeps=qp_sweeps, qp_exact=qp_exact,
    )  # fmt: skip

    weights = torch.empty((n, k), dtype=dtype, device=device)
    converged = torch.empty(n, dtype=torch.bool, device=device)
    memo = _take_memo(y, numi, profiles, tables, settings)
    if memo is not None:  # rows fitted by sigma estimation: fit only the others
        rest = torch.ones(n, dtype=torch.bool)
        rest[memo.rows.cpu()] = False
        rest_idx = rest.nonzero().squeeze(1)
        weights[memo.rows.to(device)] = memo.weights
        converged[memo.rows.to(device)] = memo.converged
        if rest_idx.numel():
            y_rest = (
                y[rest_idx.to(y.device)] if isinstance(y, torch.Tensor) else y[rest_idx.numpy()]
            )
            w_r, c_r = solve_irwls(
                y_rest, numi[rest_idx.to(numi.device)], profiles, tables, batch_size=batch_size,
                **settings,
            )  # fmt: skip
            weights[rest_idx.to(device)] = w_r
            converged[rest_idx.to(device)] = c_r
        return weights, converged
    bs = max(1, int(batch_size))
    for a in range(0, n, bs):
        b = min(a + bs, n)
        row_off = _flat_row_offset(_dense_rows(y, a, b, device), t)
        design = _Shared(row_off, numi[a:b], p, pt, p_tri, tri, t)
        weights[a:b], converged[a:b] = irwls(design, b - a, k, dtype, device, **settings)
    return weights, converged


def solve_subsets(
    row_off: torch.Tensor,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    pix: torch.Tensor,
    types: torch.Tensor,
    tables: LikelihoodTables,
    *,
    max_iter: int,
    min_change: float = 1e-3,
    step: float = 0.3,
    psd_floor: float = 1e-3,
    qp_sweeps: int = 50,
    qp_exact: bool = False,
    score: bool = False,
    batch_size: int = 50000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Fit each task's k weights over its own type subset; optionally score it by its NLL.

    Args:
        row_off: (N_pix, G) flat row offsets of the pixels' clipped counts (``_flat_row_offset``).
        numi: (N_pix,) total UMI per pixel.
        profiles: (G, K) profiles, in the compute device / dtype.
        pix: (T,) pixel of each task; types: (T, k) type indices of each task (k >= 1).
        tables: likelihood tables on the device / dtype.
        score: also return each task's NLL at its fitted weights.
        batch_size: tasks solved together (results do not depend on it).

    Returns:
        weights (T, k) (not normalised), converged (T,), NLL (T,) or None.
    """
    device, dtype = profiles.device, profiles.dtype
    n, k = types.shape
    pt = profiles.T.contiguous()
    weights = torch.empty((n, k), dtype=dtype, device=device)
    converged = torch.empty(n, dtype=torch.bool, device=device)
    nll = torch.empty(n, dtype=dtype, device=device) if score else None
    bs = max(1, int(batch_size))
    for a in range(0, n, bs):
        b = min(a + bs, n)
        design = _Subsets(row_off, numi, pt, pix[a:b], types[a:b], tables)
        weights[a:b], converged[a:b] = irwls(
            design, b - a, k, dtype, device, max_iter=max_iter, min_change=min_change,
            step=step, psd_floor=psd_floor, qp_sweeps=qp_sweeps, qp_exact=qp_exact,
        )  # fmt: skip
        if nll is not None:
            nll[a:b] = design.nll(weights[a:b])
    return weights, converged, nll


def subset_nll(
    row_off: torch.Tensor,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    pix: torch.Tensor,
    types: torch.Tensor,
    weights: torch.Tensor,
    tables: LikelihoodTables,
) -> torch.Tensor:
    """NLL of given weights (T, k) over each task's type subset."""
    design = _Subsets(row_off, numi, profiles.T.contiguous(), pix, types, tables)
    return design.nll(weights)
