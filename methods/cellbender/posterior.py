"""Posterior and denoising (editable surface).

1. MAP latents of every analysed droplet (eval mode, batches of 500): z loc, cell probability
   sigmoid(p), cell size exp(d_cell loc), efficiency ε̂, and the expected background λ.
2. For droplets with p > 0.5 (batches of 128): ``n_samples`` guide draws, the model replayed;
   for each nonzero (cell, gene) count x the posterior of the noise count k over a window of
   at most ``window`` values, P(k | x) ∝ Poisson(k; λ) · NB(x − k; μ, 1/φ), averaged over the
   draws (λ: ``FullModel.noise_rates``, ``method.posterior_rate``); kept as log-probabilities (entries below −10 dropped).
3. Estimation: ``mckp`` chooses one k per entry, maximising Σ log P(k) while meeting, per gene,
   the noise target Σ_cells E[λ] + ``fpr`` × Σ_cells x (a multiple-choice knapsack, solved
   greedily over the entries' increments, which is exact for log-concave windows); ``map``
   takes each entry's most probable k. Denoised counts = x − k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from methods.cellbender.model import FullModel


@dataclass
class Latents:
    z: np.ndarray  # (N, 64)
    p: np.ndarray  # (N,) cell probability
    d_cell: np.ndarray
    eps: np.ndarray
    background: np.ndarray  # (N,) expected background counts


@dataclass
class NoisePosterior:
    """Per nonzero entry of the cells' counts: its window of noise counts and log-probs."""

    rows: np.ndarray  # (E,) cell row (index into ``cells``)
    cols: np.ndarray  # (E,) gene
    x: np.ndarray  # (E,) observed count
    k0: np.ndarray  # (E,) first noise count of the window
    logp: np.ndarray  # (E, W) log P(k0 + j | x); −inf outside [0, x]
    expected: np.ndarray  # (E,) E[λ] of the entry (the ambient target's share)


@torch.no_grad()
def map_latents(model: FullModel, staged: Any, n: int, batch: int = 500) -> Latents:
    model.eval()
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("z", "p", "d", "e", "b")}
    for lo in range(0, n, batch):
        idx = np.arange(lo, min(lo + batch, n))
        x, _, _ = staged.rows(idx)
        z_loc, _, p_logit, eps_mean, d_loc = model.encode(x)
        g = model.guide(x)
        g.z, g.eps, g.d_cell = z_loc, eps_mean, torch.exp(d_loc)
        g.d_empty = torch.exp(model.d_empty_loc).expand(x.shape[0])
        ra, rb = model.rho_params()
        g.rho = ra / (ra + rb)
        _, lam0, lam1 = model.rates(g)
        q1 = torch.sigmoid(p_logit)
        bkg = (q1[:, None] * lam1 + (1 - q1[:, None]) * lam0).sum(-1)
        for key, value in zip("zpdeb", (z_loc, q1, torch.exp(d_loc), eps_mean, bkg), strict=True):
            out[key].append(value.double().cpu().numpy())
    return Latents(*(np.concatenate(out[k]) for k in "zpdeb"))


def _nb_log(x: torch.Tensor, mu: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """log NB(x; mean μ, inverse dispersion α), elementwise (full, with lgamma(x + 1))."""
    log_am = torch.log(alpha + mu)
    return (
        torch.lgamma(x + alpha) - torch.lgamma(alpha) - torch.lgamma(x + 1)
        + alpha * (torch.log(alpha) - log_am) + x * (torch.log(mu.clamp(min=1e-30)) - log_am)
    )  # fmt: skip


@torch.no_grad()
def noise_posterior(
    model: FullModel,
    staged: Any,
    cells: np.ndarray,
    n_samples: int = 20,
    window: int = 20,
    batch: int = 128,
    seed: int = 0,
    rate: str = "upstream",
) -> NoisePosterior:
    """The noise-count posterior of every nonzero entry of ``cells`` (module doc, step 2)."""
    model.eval()
    torch.manual_seed(seed)  # the Gamma/Beta draws use the global generator
    gen = torch.Generator(device=staged.device).manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("r", "c", "x", "k0", "lp", "ex")}
    ks = torch.arange(window, device=staged.device, dtype=staged.dtype)
    for lo in range(0, cells.size, batch):
        idx = cells[lo : lo + batch]
        x, _, _ = staged.rows(idx)
        rows, cols = torch.nonzero(x > 0, as_tuple=True)
        xv = x[rows, cols]
        probs, lam_mean = None, torch.zeros_like(xv)
        draws = []
        for _ in range(n_samples):
            g = model.guide(x, gen)
            mu, lam1 = model.noise_rates(g, rate)
            draws.append((mu[rows, cols], lam1[rows, cols], 1.0 / g.phi))
            lam_mean += lam1[rows, cols] / n_samples
        k0 = (torch.round(torch.minimum(lam_mean, xv)) - window // 2).clamp(min=0)
        k0 = torch.minimum(k0, (xv - window + 1).clamp(min=0))
        k = k0[:, None] + ks[None, :]
        valid = k <= xv[:, None]
        for mu, lam, alpha in draws:
            log_j = (
                k * torch.log(lam[:, None]) - lam[:, None] - torch.lgamma(k + 1)
                + _nb_log((xv[:, None] - k).clamp(min=0), mu[:, None], alpha)
            )  # fmt: skip
            log_j = torch.where(valid, log_j, torch.full_like(log_j, -torch.inf))
            post = torch.softmax(log_j, dim=-1)
            probs = post if probs is None else probs + post
        logp = torch.log(probs / n_samples)
        logp = torch.where(logp < -10, torch.full_like(logp, -torch.inf), logp)
        parts["r"].append((lo + rows).cpu().numpy())
        parts["c"].append(cols.cpu().numpy())
        parts["x"].append(xv.cpu().numpy().astype(np.int64))
        parts["k0"].append(k0.cpu().numpy().astype(np.int64))
        parts["lp"].append(logp.double().cpu().numpy())
        parts["ex"].append(lam_mean.double().cpu().numpy())
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    return NoisePosterior(
        cat["r"].astype(np.int64), cat["c"].astype(np.int64), cat["x"], cat["k0"],
        cat["lp"].reshape(-1, window), cat["ex"],
    )  # fmt: skip


def posterior_mean(post: NoisePosterior) -> np.ndarray:
    """E[k | x] of every entry under its (stored) window of noise-count probabilities."""
    prob = np.exp(post.logp)
    ks = post.k0[:, None] + np.arange(post.logp.shape[1])[None, :]
    return (prob * ks).sum(1) / np.maximum(prob.sum(1), 1e-300)


def _chain_costs(steps: np.ndarray, allowed: np.ndarray, reverse: bool) -> np.ndarray:
    """Per entry, the costs of successive one-count steps away from the MAP made
    non-decreasing along the chain (a running max: the convex hull of a log-concave window);
    positions not on the chain, and every step after an impossible one, cost inf."""
    c = np.where(allowed, np.where(np.isfinite(steps), steps, np.inf), -np.inf)
    c = c[:, ::-1] if reverse else c
    c = np.maximum.accumulate(c, axis=1)
    c = c[:, ::-1] if reverse else c
    return np.where(allowed, c, np.inf)


def estimate(post: NoisePosterior, n_genes: int, fpr: float, method: str = "mckp") -> np.ndarray:
    """The noise count chosen for every entry (module doc, step 3). ``mckp``: per gene the
    target is the posterior-mean noise Σ E[k | x] plus ``fpr`` × the remaining counts
    Σ (x − E[k | x]); starting from each entry's MAP, the cheapest one-count steps (in lost
    log-probability) towards the target are taken gene by gene, up or down."""
    best = np.argmax(post.logp, axis=1)
    if method == "map" or post.x.size == 0:
        return post.k0 + best
    w = post.logp.shape[1]
    j = np.arange(w - 1)[None, :]
    with np.errstate(invalid="ignore"):
        up = post.logp[:, :-1] - post.logp[:, 1:]  # cost of j → j + 1 at position j
    mean = posterior_mean(post)
    target = np.bincount(post.cols, weights=mean + fpr * (post.x - mean), minlength=n_genes)
    current = np.bincount(post.cols, weights=post.k0 + best, minlength=n_genes)
    need = np.rint(target - current).astype(np.int64)  # per gene: steps up (+) or down (−)
    inc = _chain_costs(up, j >= best[:, None], reverse=False)  # j → j + 1, j ≥ MAP
    dec = _chain_costs(-up, j < best[:, None], reverse=True)  # j + 1 → j, j < MAP
    choice = best.copy()
    for sign, costs in ((1, inc), (-1, dec)):
        genes = np.flatnonzero(sign * need > 0)
        if genes.size == 0:
            continue
        e_idx, steps = np.nonzero(np.isfinite(costs) & np.isin(post.cols, genes)[:, None])
        if e_idx.size == 0:
            continue
        gene = post.cols[e_idx]
        order = np.lexsort((costs[e_idx, steps], gene))
        e_idx, gene = e_idx[order], gene[order]
        starts = np.searchsorted(gene, genes)
        ends = np.searchsorted(gene, genes, side="right")
        take = np.zeros(e_idx.size, dtype=bool)
        for g, a, b in zip(genes, starts, ends, strict=True):
            take[a : a + min(b - a, int(sign * need[g]))] = True
        moved = np.bincount(e_idx[take], minlength=post.x.size)
        choice = choice + sign * moved
    return post.k0 + np.clip(choice, 0, w - 1)


def denoised(x_cells: sp.csr_matrix, post: NoisePosterior, noise: np.ndarray) -> sp.csr_matrix:
    """The cells' counts minus the chosen noise (never below 0)."""
    removed = sp.csr_matrix(
        (np.minimum(noise, post.x).astype(np.float64), (post.rows, post.cols)), shape=x_cells.shape
    )
    out = (sp.csr_matrix(x_cells, dtype=np.float64) - removed).tocsr()
    out.data = np.maximum(out.data, 0)
    out.eliminate_zeros()
    return out
