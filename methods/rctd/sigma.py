"""Sigma estimation (upstream ``choose_sigma_c`` / ``chooseSigma``; timed, editable surface).

Sample ``n_fit`` pixels with nUMI > ``umi_min_sigma`` (seeded). From sigma = 100 (x100),
repeat up to ``n_epoch`` times: fit full-mode weights at the current sigma, predict
``lambda = nUMI * P max(w, 0)`` (floored at 1e-4), score every sigma of the grid within 8
steps of the current one by ``min over m in {0.8, 0.9, 1, 1.1, 1.2}`` of the NLL of
``m * lambda`` (at most 1e6 entries), move to the best; stop when sigma stays.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol

import numpy as np
import torch

from harness.api import UserError
from methods.rctd.likelihood import _L_MAX, DELTA, LAMBDA_MAX, LAMBDA_MIN, LikelihoodTables
from methods.rctd.qtable import SIGMA_GRID
from methods.rctd.solver import FitMemo, remember_fit, solve_irwls

SIGMA_START = 100
WINDOW = 8
MULTIPLIERS = (0.8, 0.9, 1.0, 1.1, 1.2)
MAX_ENTRIES = 1_000_000
_CHUNK = 2**18  # entries scored at a time


class Tables(Protocol):
    """Likelihood tables by sigma x 100 (a dict or ``qtable.TableStore``)."""

    def __getitem__(self, sigma: int) -> LikelihoodTables: ...


def sigma_window(sigma: int) -> list[int]:
    """Grid values within ``WINDOW`` steps of ``sigma`` (which must be on the grid)."""
    i = SIGMA_GRID.index(sigma)
    return list(SIGMA_GRID[max(0, i - WINDOW) : i + WINDOW + 1])


# False: the torch code path (the one CUDA runs) on the CPU too; tests compare the two
CPU_KERNELS = True


@functools.cache
def _cpu_score_kernel():
    """The scatter of ``score_sigmas`` in one pass per multiplier (numba, cached on disk):
    the same entries, order and arithmetic as the chunked torch version."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def score(row_off, lam, lut, x0, acc, lo, hi, delta, l_max, m):
        acc[:] = 0.0
        for j in range(lam.shape[0]):
            lm = min(max(lam[j] * m, lo), hi)
            ell = min(max(int(math.sqrt(lm / delta)), 0), l_max)
            i = lut[ell]
            u = lm - x0[i]
            r = row_off[j] + i
            acc[r, 0] += 1.0
            acc[r, 1] += u
            acc[r, 2] += u * u
            acc[r, 3] += u * u * u

    return score


def score_sigmas(y: torch.Tensor, lam: torch.Tensor, sigmas: list[int], tables: Tables):
    """For each sigma: min over ``MULTIPLIERS`` of ``-sum log P(y | m * lam)`` (float64).

    The spline value on interval i of count row k is ``sum_p u^p C[k, i, p]`` with
    ``u = lam - x_i`` and power-form coefficients C (q, c1, sq / 2, e / 6), so the sum over
    all entries is ``sum_{k,i,p} A[k, i, p] C[k, i, p]`` where A accumulates ``u^p`` of the
    entries falling on (k, i): one scatter-add per multiplier, then per sigma a dot product
    over the rows (k, i) that some entry fell on.
    """
    f64 = torch.float64
    t0 = tables[sigmas[0]]
    c0 = t0.coefficients()
    n_rows = c0["q"].shape[0]
    coefs = [tables[s].coefficients() for s in sigmas]
    row_off = torch.clamp(y, 0, t0.k_val).to(torch.long) * t0.x.shape[0]
    x0 = c0["x0"].to(f64)
    lam = lam.to(f64)
    best = torch.full((len(sigmas),), float("inf"), dtype=f64, device=lam.device)
    if CPU_KERNELS and lam.device.type == "cpu":
        kern = _cpu_score_kernel()
        acc = torch.empty((n_rows, 4), dtype=f64)
        args = (row_off.contiguous().numpy(), lam.contiguous().numpy(), c0["lut"].numpy(),
                x0.numpy(), acc.numpy(), LAMBDA_MIN, LAMBDA_MAX, DELTA, _L_MAX)  # fmt: skip
        for m in MULTIPLIERS:
            kern(*args, m)
            best = torch.minimum(best, -_nll_by_sigma(acc, coefs))
        return best
    for m in MULTIPLIERS:
        acc = torch.zeros((n_rows, 4), dtype=f64, device=lam.device)
        for a in range(0, lam.shape[0], _CHUNK):
            lm = torch.clamp(lam[a : a + _CHUNK] * m, LAMBDA_MIN, LAMBDA_MAX)
            ell = torch.sqrt(lm / DELTA).to(torch.long).clamp_(max=_L_MAX)
            i = c0["lut"].index_select(0, ell)
            u = lm - x0.index_select(0, i)
            powers = torch.stack([torch.ones_like(u), u, u * u, u * u * u], dim=1)
            acc.index_add_(0, row_off[a : a + _CHUNK] + i, powers)
        best = torch.minimum(best, -_nll_by_sigma(acc, coefs))
    return best


def _nll_by_sigma(acc: torch.Tensor, coefs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Per sigma ``sum A C``: only the (count, interval) rows some entry fell on contribute, so
    their coefficients are gathered per sigma instead of a GEMV over every row of every table."""
    f64 = torch.float64
    rows = acc[:, 0].nonzero().squeeze(1)
    a_t = acc.index_select(0, rows)
    return torch.stack([
        (a_t[:, 0] * c["q"].index_select(0, rows).to(f64)).sum()
        + (a_t[:, 1] * c["c1"].index_select(0, rows).to(f64)).sum()
        + (a_t[:, 2] * (0.5 * c["sq"].index_select(0, rows).to(f64))).sum()
        + (a_t[:, 3] * (c["e"].index_select(0, rows).to(f64) / 6.0)).sum()
        for c in coefs
    ])  # fmt: skip


def choose_sigma(
    counts: Any,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    tables: Tables,
    *,
    umi_min_sigma: int,
    n_fit: int,
    n_epoch: int,
    seed: int,
    solver_kw: dict,
) -> int:
    """The estimated sigma x 100 (module doc). ``counts`` (N, G) (a tensor or a scipy CSR
    matrix) and ``numi`` (N,) are the kept pixels on the regression genes; ``profiles`` (G, K)
    the platform-normalised profiles."""
    eligible = (numi > umi_min_sigma).nonzero().squeeze(1).cpu().numpy()
    if eligible.size == 0:
        raise UserError(
            f"method.umi_min_sigma={umi_min_sigma}: no pixel has more UMIs, so sigma cannot "
            "be estimated; lower it or set method.sigma_override"
        )
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(eligible, min(n_fit, eligible.size), replace=False))
    if isinstance(counts, torch.Tensor):
        y = counts[torch.as_tensor(pick, device=counts.device)]
    else:  # a scipy CSR matrix: densify the picked pixels only
        y = torch.as_tensor(counts[pick].toarray(), device=numi.device, dtype=profiles.dtype)
    nu = numi[torch.as_tensor(pick, device=numi.device)]
    entries = None
    if y.numel() > MAX_ENTRIES:
        entries = torch.as_tensor(
            np.sort(rng.choice(y.numel(), MAX_ENTRIES, replace=False)), device=y.device
        )
    y_flat = y.reshape(-1) if entries is None else y.reshape(-1)[entries]
    sigma = SIGMA_START
    for _ in range(n_epoch):
        w, conv = solve_irwls(y, nu, profiles, tables[sigma], **solver_kw)
        lam = (nu[:, None] * (w.clamp(min=0.0) @ profiles.T)).clamp(min=1e-4).reshape(-1)
        if entries is not None:
            lam = lam[entries]
        window = sigma_window(sigma)
        scores = score_sigmas(y_flat, lam, window, tables)
        new = window[int(torch.argmin(scores))]
        if new == sigma:  # the main fit at this sigma repeats these rows: hand them over
            settings = {k: v for k, v in solver_kw.items() if k != "batch_size"}
            remember_fit(FitMemo(
                rows=torch.as_tensor(pick), y=y, numi=nu, profiles=profiles,
                tables=tables[sigma], settings=settings, weights=w, converged=conv,
            ))  # fmt: skip
            break
        sigma = new
    return sigma
