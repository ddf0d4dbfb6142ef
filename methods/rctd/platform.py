"""Platform effect (upstream ``fitBulk``; timed, editable surface).

The spatial bulk ``y_g = sum_pixels counts`` over the bulk gene list is fitted as one "pixel"
with total ``N = sum nUMI`` and design ``S = N P`` by IRWLS in *bulk mode*: a Gaussian-on-log
surrogate with ``d1 = -2 (log lambda - log y) / lambda`` and
``d2 = -2 (1 - log lambda + log y) / lambda^2`` (``constrain=False``, up to 100 iterations,
MIN_CHANGE 1e-4). Genes with fewer than ``min_obs_bulk`` (10) bulk counts sit out the fit.
The proportions p (clipped at 0, normalised) then rescale every gene:
``P'_gk = P_gk / (sum_k p_k P_gk / (y_g / N))``.

The bulk sums and the renormalisation are accumulated in extended precision
(``np.longdouble``), as upstream; for integer counts the float64 sums are exact anyway.
"""

from __future__ import annotations

import numpy as np
import torch

from methods.rctd.solver import irwls


class _Bulk:
    """The bulk "pixel": one problem, Gaussian-on-log derivatives."""

    def __init__(self, s_mat: torch.Tensor, log_y: torch.Tensor, floor: float) -> None:
        self.s_mat, self.log_y, self.floor = s_mat, log_y, floor

    def take(self, keep: torch.Tensor) -> _Bulk:
        return self  # a single problem: only ever kept whole

    def grad_hess(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = (self.s_mat @ s[0]).abs().clamp(min=self.floor)
        resid = torch.log(lam) - self.log_y
        d1 = -2.0 * resid / lam
        d2 = -2.0 * (1.0 - resid) / (lam * lam)
        grad = -(d1 @ self.s_mat)
        hess = (self.s_mat * (-d2)[:, None]).T @ self.s_mat
        return grad[None], hess[None]


def _bulk(counts: torch.Tensor, numi: torch.Tensor) -> tuple[np.ndarray, np.longdouble]:
    """Per-gene bulk counts and total nUMI, in extended precision. ``counts``: (N, G) counts,
    or (G,) their column sums (exact either way: sums of integer counts in float64)."""
    y = counts if counts.ndim == 1 else counts.sum(dim=0, dtype=torch.float64)
    y = y.to(torch.float64).cpu().numpy().astype(np.longdouble)
    return y, np.sum(numi.cpu().numpy().astype(np.longdouble))


def fit_bulk(
    counts: torch.Tensor,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    *,
    min_obs: int = 10,
    max_iter: int = 100,
    min_change: float = 1e-4,
    step: float = 0.3,
    psd_floor: float = 1e-3,
    qp_sweeps: int = 50,
    qp_exact: bool = False,
) -> torch.Tensor:
    """Bulk proportions p (K,), clipped at 0 and summing to 1, float64.

    Args:
        counts: (N, G) counts of the kept pixels on the bulk genes, or (G,) their sums.
        numi: (N,) their nUMI (all genes).
        profiles: (G, K) reference profiles on the bulk genes.
    """
    device = profiles.device
    k = profiles.shape[1]
    y_ld, total = _bulk(counts, numi)
    y64 = torch.as_tensor(y_ld.astype(np.float64), dtype=torch.float64, device=device)
    use = y64 >= min_obs
    s_mat = (float(total) * profiles.to(torch.float64))[use]
    design = _Bulk(s_mat, torch.log(y64[use]), max(1e-4, 1e-7 * float(total)))
    w, _ = irwls(
        design, 1, k, torch.float64, device, max_iter=max_iter, min_change=min_change,
        step=step, psd_floor=psd_floor, qp_sweeps=qp_sweeps, qp_exact=qp_exact,
    )  # fmt: skip
    p = np.maximum(w[0].cpu().numpy(), 0.0).astype(np.longdouble)
    p /= p.sum()
    return torch.as_tensor(p.astype(np.float64), device=device)


def normalise_profiles(
    profiles: torch.Tensor, counts: torch.Tensor, numi: torch.Tensor, p: torch.Tensor
) -> torch.Tensor:
    """``P'_gk = P_gk / (sum_k p_k P_gk / (y_g / N))`` for the genes of ``profiles`` (G, K);
    ``counts`` (N, G) are the kept pixels on the same genes (or (G,) their sums). Same dtype /
    device as profiles."""
    y_ld, total = _bulk(counts, numi)
    p_ld = p.cpu().numpy().astype(np.longdouble)
    prof_ld = profiles.cpu().numpy().astype(np.longdouble)
    weight_avg = (prof_ld * p_ld[None, :]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = prof_ld / (weight_avg / (y_ld / total))[:, None]
    return torch.as_tensor(norm.astype(np.float64), dtype=profiles.dtype, device=profiles.device)
