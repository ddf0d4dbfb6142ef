"""Posterior and denoising (editable surface).

1. MAP latents of every analysed droplet (eval mode, batches of 500): z loc, cell probability
   sigmoid(p), cell size exp(d_cell loc), efficiency ε̂, and the expected background λ.
2. For droplets with p > 0.5 (batches of ``batch`` cells: upstream's 128 unless the method's
   memory model says fewer fit): ``n_samples`` guide draws, the model replayed; for each
   nonzero (cell, gene) count x the posterior of the noise count k over a window of at most
   ``window`` values, P(k | x) ∝ Poisson(k; λ) · NB(x − k; μ, 1/φ), averaged over the draws
   (λ: ``FullModel.noise_rates``, ``method.posterior_rate``); kept as log-probabilities
   (entries below −10 dropped).
3. Estimation: ``mckp`` chooses one k per entry, maximising Σ log P(k) while meeting, per gene,
   the noise target Σ_cells E[k | x] + ``fpr`` × Σ_cells (x − E[k | x]) (a multiple-choice
   knapsack, solved greedily over the entries' increments, which is exact for log-concave
   windows); ``map`` takes each entry's most probable k. Denoised counts = x − k.

Memory (#23 item 4). Only what is kept of step 2 grows with the entries E (the cells' nonzero
counts); a batch's tensors are bounded by the batch (the method sizes it: ``method.memory_gb``,
methods/cellbender/memory.py). Per batch the windows are compacted on the device to the span
between each entry's first and last kept log-probability (4.5 of 20 values on average on the
default data; a gap inside the span would be kept as −inf) and stored flat in the compute
dtype — the values were float32 numbers already, nothing is rounded — with per entry its gene,
count and window start (int32) and the span's offset and length (one byte each):
``NoisePosterior``, ~32 bytes per entry where the dense float64 (E, W) window and its int64
arrays took 200. ``estimate`` never builds an (E, W) array: it rebuilds the dense windows of
``chunk`` entries at a time (each row as it was, at its window position, so every per-entry
figure is the same to the bit) in two passes: the per-gene targets, summed in entry order with
``np.add.at`` (the additions one ``np.bincount`` over all entries makes: the same sums), then
the greedy steps, keeping per gene only the ``|need|`` cheapest steps offered so far, ordered
by cost, then entry (the order of the one stable sort it replaces). Its transients are bounded
by the chunk and the steps taken (before: ~1 kB per entry of dense intermediates). The noise
counts are identical to the dense estimator's, whatever the chunk (tests/test_cellbender.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from methods.cellbender.model import FullModel, Guide


@dataclass
class Latents:
    z: np.ndarray  # (N, 64)
    p: np.ndarray  # (N,) cell probability
    d_cell: np.ndarray
    eps: np.ndarray
    background: np.ndarray  # (N,) expected background counts


def _index_dtype(limit: int) -> np.dtype:
    """The smallest unsigned integer type that holds 0..limit."""
    return np.min_scalar_type(max(int(limit), 1))


@dataclass
class NoisePosterior:
    """The kept noise-count posterior (module doc, "Memory"): per nonzero entry of the cells'
    counts, cell by cell and genes ascending within a cell (the cells' CSR order), the window
    k0 .. k0 + W − 1 of noise counts, of which positions ``lo`` .. ``lo + n − 1`` are stored
    (the others are −inf: below −10, or k > x); ``values`` holds the stored log-probabilities
    of every entry, entry after entry."""

    cell_ptr: np.ndarray  # (cells + 1,) int64: cell i's entries are cell_ptr[i]:cell_ptr[i + 1]
    cols: np.ndarray  # (E,) int32 gene
    x: np.ndarray  # (E,) int32 observed count
    k0: np.ndarray  # (E,) int32 first noise count of the window
    lo: np.ndarray  # (E,) unsigned: first stored position of the window
    n: np.ndarray  # (E,) unsigned: stored positions (≥ 1)
    values: np.ndarray  # (Σ n,) log P(k0 + lo + i | x), the compute dtype (float32)
    window: int  # W

    @property
    def size(self) -> int:
        return int(self.x.size)

    @property
    def rows(self) -> np.ndarray:
        """(E,) the cell row (index into ``cells``) of every entry."""
        return np.repeat(np.arange(self.cell_ptr.size - 1), np.diff(self.cell_ptr))

    @classmethod
    def from_dense(
        cls, rows: np.ndarray, cols: np.ndarray, x: np.ndarray, k0: np.ndarray,
        logp: np.ndarray, n_cells: int | None = None,
    ) -> NoisePosterior:  # fmt: skip
        """From dense (E, W) windows (−inf: not kept); ``rows`` non-decreasing."""
        rows, logp = np.asarray(rows), np.asarray(logp)
        e, w = logp.shape
        n_cells = int(rows.max()) + 1 if n_cells is None and e else int(n_cells or 0)
        ptr = np.zeros(n_cells + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_cells), out=ptr[1:])
        fin = np.isfinite(logp)
        first = np.where(fin.any(1), fin.argmax(1), 0)
        last = np.where(fin.any(1), w - 1 - fin[:, ::-1].argmax(1), 0)
        span = np.arange(w)[None, :]
        keep = (span >= first[:, None]) & (span <= last[:, None])
        kind = _index_dtype(w)
        return cls(
            ptr, np.asarray(cols, dtype=np.int32), np.asarray(x, dtype=np.int32),
            np.asarray(k0, dtype=np.int32), first.astype(kind), (last - first + 1).astype(kind),
            logp[keep], w,
        )  # fmt: skip

    def chunks(self, size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(a, b, logp): the dense float64 (b − a, W) windows of entries a .. b − 1 in turn,
        each row as it would be in the full (E, W) array."""
        offset = 0
        w = self.window
        for a in range(0, self.size, max(1, int(size))):
            b = min(a + max(1, int(size)), self.size)
            n = self.n[a:b].astype(np.int64)
            total = int(n.sum())
            starts = np.cumsum(n) - n
            row = np.repeat(np.arange(b - a), n)
            col = np.repeat(self.lo[a:b].astype(np.int64) - starts, n) + np.arange(total)
            out = np.full((b - a, w), -np.inf)
            out[row, col] = self.values[offset : offset + total]
            offset += total
            yield a, b, out


@torch.no_grad()
def map_latents(model: FullModel, staged: Any, n: int, batch: int = 500) -> Latents:
    model.eval()
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("z", "p", "d", "e", "b")}
    for lo in range(0, n, batch):
        idx = np.arange(lo, min(lo + batch, n))
        x, _, _ = staged.rows(idx)
        z_loc, z_scale, p_logit, eps_mean, d_loc = model.encode(x)
        # the guide at its point estimates (no draw: ``rates`` reads z, ε, d_cell, d_empty, ρ)
        ra, rb = model.rho_params()
        d_empty = torch.exp(model.d_empty_loc).expand(x.shape[0])
        d_cell = torch.exp(d_loc)
        g = Guide(
            z_loc=z_loc, z_scale=z_scale, z=z_loc, p_logit=p_logit, d_cell_loc=d_loc,
            d_cell=d_cell, d_empty=d_empty, eps_mean=eps_mean, eps=eps_mean,
            rho=ra / (ra + rb), phi=model.phi_log_conc.exp() / model.phi_log_rate.exp(),
        )  # fmt: skip
        _, lam0, lam1 = model.rates(g)
        q1 = torch.sigmoid(p_logit)
        bkg = (q1[:, None] * lam1 + (1 - q1[:, None]) * lam0).sum(-1)
        for key, value in zip("zpdeb", (z_loc, q1, d_cell, eps_mean, bkg), strict=True):
            out[key].append(value.double().cpu().numpy())
    return Latents(*(np.concatenate(out[k]) for k in "zpdeb"))


GROUPS = (2, 3, 4, 6, 8, 11, 15, 20)  # window widths computed together (the last: W)


def _nb_log(
    x: torch.Tensor, mu: torch.Tensor, alpha: torch.Tensor, lgamma_x1: torch.Tensor | None = None
) -> torch.Tensor:
    """log NB(x; mean μ, inverse dispersion α), elementwise (full, with lgamma(x + 1);
    ``lgamma_x1``: that term precomputed)."""
    log_am = torch.log(alpha + mu)
    lg_x1 = torch.lgamma(x + 1) if lgamma_x1 is None else lgamma_x1
    return (
        torch.lgamma(x + alpha) - torch.lgamma(alpha) - lg_x1
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
    """The noise-count posterior of every nonzero entry of ``cells`` (module doc, step 2),
    compacted batch by batch (module doc, "Memory")."""
    model.eval()
    torch.manual_seed(seed)  # the Gamma/Beta draws use the global generator
    gen = torch.Generator(device=staged.device).manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("nnz", "c", "x", "k0", "lo", "n", "v")}
    ks = torch.arange(window, device=staged.device, dtype=staged.dtype)
    pos = torch.arange(window, device=staged.device)
    kind = _index_dtype(window)
    for lo in range(0, cells.size, batch):
        idx = cells[lo : lo + batch]
        x, _, _ = staged.rows(idx)
        rows, cols = torch.nonzero(x > 0, as_tuple=True)
        xv = x[rows, cols]
        # entries ordered by their valid window width min(x + 1, W) (k ≤ x: k0 = 0 when
        # x < W − 1), so that groups of similar widths are computed on their own columns only
        width = xv.clamp(max=window - 1).to(torch.int64) + 1
        order = torch.argsort(width, stable=True)
        flat = (rows * x.shape[1] + cols)[order]
        xs, ws = xv[order], width[order]
        lam_mean = torch.zeros_like(xs)
        draws = []
        enc = model.encode(x)  # deterministic in eval mode: the same for every draw
        for _ in range(n_samples):
            g = model.sample(enc, x, gen)
            mu, lam1 = model.noise_rates(g, rate)
            lam_e = lam1.reshape(-1)[flat]
            draws.append((mu.reshape(-1)[flat], lam_e, 1.0 / g.phi))
            lam_mean += lam_e / n_samples
        k0s = (torch.round(torch.minimum(lam_mean, xs)) - window // 2).clamp(min=0)
        k0s = torch.minimum(k0s, (xs - window + 1).clamp(min=0))
        # window positions along dim 0, entries along dim 1: the softmax over few positions
        # then runs across entries (vectorised) rather than row by row
        probs_s = torch.zeros((window, xs.numel()), dtype=xs.dtype, device=xs.device)
        groups = sorted({min(g, window) for g in GROUPS} | {window})
        edges = torch.searchsorted(ws, torch.as_tensor(groups, device=ws.device), right=True)
        a = 0
        for w_g, b in zip(groups, edges.tolist(), strict=True):
            if b <= a:
                continue
            k = k0s[None, a:b] + ks[:w_g, None]
            xg = xs[None, a:b]
            signal = (xg - k).clamp(min=0)
            # log Poisson(k; λ) + log NB(x − k; μ, α) along the window, up to terms constant
            # along it (−λ, −lgamma(α), α·log(α / (α + μ))), which the softmax cancels. The
            # draw-invariant −lgamma(k + 1) − lgamma(x − k + 1) (−inf past k = x) is computed
            # once; lgamma(s + α) of the signal s = x − k, one less per position, as
            # −Σ log(s + α) (lgamma(s + 1 + α) = lgamma(s + α) + log(s + α)) up to a per-entry
            # constant: valid positions come first.
            base = -(torch.lgamma(k + 1) + torch.lgamma(signal + 1))
            base = torch.where(k <= xg, base, torch.full_like(base, -torch.inf))
            acc = probs_s[:w_g, a:b]
            for mu, lam, alpha in draws:
                mu, lam = mu[a:b], lam[a:b]
                slope = torch.log(mu.clamp(min=1e-30)) - torch.log(alpha + mu)
                log_j = torch.cumsum(torch.log(signal + alpha), dim=0).neg_()
                log_j += k * torch.log(lam)[None, :]
                log_j += signal * slope[None, :]
                log_j += base
                acc += torch.softmax(log_j, dim=0)
            a = b
        del draws, signal, base, acc
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        probs, k0 = probs_s.t()[inverse], k0s[inverse]
        logp = torch.log(probs / n_samples)
        kept = logp >= -10  # the rest is −inf (below −10, or k > x)
        first = kept.to(torch.uint8).argmax(1)
        last = window - 1 - kept.flip(1).to(torch.uint8).argmax(1)
        last = torch.maximum(last, first)  # an entry with nothing kept (none) keeps one −inf
        span = (pos[None, :] >= first[:, None]) & (pos[None, :] <= last[:, None])
        values = torch.where(kept, logp, torch.full_like(logp, -torch.inf))[span]
        parts["nnz"].append(np.bincount(rows.cpu().numpy(), minlength=idx.size))
        parts["c"].append(cols.cpu().numpy().astype(np.int32))
        parts["x"].append(xv.cpu().numpy().astype(np.int32))
        parts["k0"].append(k0.cpu().numpy().astype(np.int32))
        parts["lo"].append(first.cpu().numpy().astype(kind))
        parts["n"].append((last - first + 1).cpu().numpy().astype(kind))
        parts["v"].append(values.cpu().numpy())
        del probs, logp, kept, span, values

    def cat(key: str, dtype: Any) -> np.ndarray:
        out = np.concatenate(parts.pop(key)) if parts[key] else np.zeros(0, dtype=dtype)
        return out.astype(dtype, copy=False)

    ptr = np.zeros(cells.size + 1, dtype=np.int64)
    np.cumsum(cat("nnz", np.int64), out=ptr[1:])
    return NoisePosterior(
        ptr, cat("c", np.int32), cat("x", np.int32), cat("k0", np.int32), cat("lo", kind),
        cat("n", kind), cat("v", np.float32 if staged.dtype == torch.float32 else np.float64),
        window,
    )  # fmt: skip


def posterior_mean(post: NoisePosterior, chunk: int | None = None) -> np.ndarray:
    """E[k | x] of every entry under its (stored) window of noise-count probabilities."""
    out = np.empty(post.size)
    for a, b, logp in post.chunks(chunk or _chunk(post.window)):
        out[a:b] = _mean(logp, post.k0[a:b])
    return out


def _mean(logp: np.ndarray, k0: np.ndarray) -> np.ndarray:
    prob = np.exp(logp)
    ks = k0.astype(np.int64)[:, None] + np.arange(logp.shape[1])[None, :]
    return (prob * ks).sum(1) / np.maximum(prob.sum(1), 1e-300)


CHUNK_ELEMS = 1 << 19  # window values per estimator chunk (4 MiB per float64 array)
FLUSH = 1 << 20  # steps offered between two merges of the cheapest kept (at least)


def _chunk(window: int) -> int:
    return max(1, CHUNK_ELEMS // max(window, 1))


def _chain_costs(steps: np.ndarray, allowed: np.ndarray, reverse: bool) -> np.ndarray:
    """Per entry, the costs of successive one-count steps away from the MAP made
    non-decreasing along the chain (a running max: the convex hull of a log-concave window);
    positions not on the chain, and every step after an impossible one, cost inf."""
    c = np.where(allowed, np.where(np.isfinite(steps), steps, np.inf), -np.inf)
    c = c[:, ::-1] if reverse else c
    c = np.maximum.accumulate(c, axis=1)
    c = c[:, ::-1] if reverse else c
    return np.where(allowed, c, np.inf)


class _Cheapest:
    """Per gene, the ``quota[g]`` cheapest steps offered so far, ordered by (cost, entry) —
    the order of one stable sort by (gene, cost) over all steps in entry order (which of an
    entry's equally cheap steps is kept does not matter: only their number moves it)."""

    def __init__(self, quota: np.ndarray, flush: int) -> None:
        self.quota = quota
        self.flush = flush
        self.bar = np.full(quota.size, np.inf)  # a full gene takes only steps cheaper than this
        self.kept: tuple[np.ndarray, ...] = tuple(
            np.zeros(0, t) for t in (np.int32, np.float64, np.int64)
        )  # (gene, cost, entry)
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.n_pending = 0

    def offer(self, gene: np.ndarray, cost: np.ndarray, entry: np.ndarray) -> None:
        """Steps of later entries than any offered before (a full gene's bar: a step as cheap
        as its dearest kept one comes after it)."""
        ok = cost < self.bar[gene]
        if not ok.all():
            gene, cost, entry = gene[ok], cost[ok], entry[ok]
        self.pending.append((gene, cost, entry))
        self.n_pending += gene.size
        if self.n_pending > max(self.flush, self.kept[0].size):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        gene, cost, entry = (np.concatenate(c) for c in zip(self.kept, *self.pending, strict=True))
        self.pending, self.n_pending = [], 0
        # grouped by gene (a stable sort: within a gene the steps stay in entry order, the
        # kept ones, all of earlier entries, first); per gene the quota cheapest, ties to the
        # earlier entry — the steps an (gene, cost, entry) sort would rank first
        key = gene.astype(np.uint16) if self.quota.size <= 1 << 16 else gene
        order = np.argsort(key, kind="stable")
        gene, cost, entry = gene[order], cost[order], entry[order]
        n = self.quota.size
        starts = np.searchsorted(gene, np.arange(n + 1))
        sizes = np.diff(starts)
        keep = np.ones(gene.size, dtype=bool)
        for g in np.flatnonzero(sizes > self.quota):
            a, b, q = starts[g], starts[g + 1], int(self.quota[g])
            c = cost[a:b]
            if q == 0:
                keep[a:b] = False
                continue
            bar = np.partition(c, q - 1)[q - 1]
            sel = c < bar
            ties = np.flatnonzero(c == bar)[: q - int(sel.sum())]
            sel[ties] = True
            keep[a:b] = sel
        self.kept = (gene[keep], cost[keep], entry[keep])
        gene, cost = self.kept[0], self.kept[1]
        counts = np.bincount(gene, minlength=n)
        full = np.flatnonzero((counts >= self.quota) & (self.quota > 0))
        if full.size:  # the dearest kept step of each full gene
            nonempty = counts > 0
            dearest = np.full(n, -np.inf)
            dearest[nonempty] = np.maximum.reduceat(
                cost, np.searchsorted(gene, np.flatnonzero(nonempty))
            )
            self.bar[full] = dearest[full]

    def take(self, choice: np.ndarray, sign: int) -> None:
        """Move each entry's ``choice`` by ``sign`` once per step of it kept."""
        self._merge()
        np.add.at(choice, self.kept[2], sign)


def estimate(
    post: NoisePosterior, n_genes: int, fpr: float, method: str = "mckp", chunk: int | None = None
) -> np.ndarray:
    """The noise count chosen for every entry (module doc, step 3). ``mckp``: per gene the
    target is the posterior-mean noise Σ E[k | x] plus ``fpr`` × the remaining counts
    Σ (x − E[k | x]); starting from each entry's MAP, the cheapest one-count steps (in lost
    log-probability) towards the target are taken gene by gene, up or down. ``chunk`` entries
    at a time (module doc, "Memory"; the result does not depend on it)."""
    w, size = post.window, chunk or _chunk(post.window)
    best = np.zeros(post.size, dtype=_index_dtype(w))
    target = np.zeros(n_genes)
    current = np.zeros(n_genes)
    for a, b, logp in post.chunks(size):
        best[a:b] = np.argmax(logp, axis=1)
        if method == "map":
            continue
        mean = _mean(logp, post.k0[a:b])
        cols = post.cols[a:b]
        # in entry order, as one bincount over all entries adds them: the same sums to the bit
        np.add.at(target, cols, mean + fpr * (post.x[a:b] - mean))
        k_map = post.k0[a:b] + best[a:b].astype(np.int64)
        current += np.bincount(cols, weights=k_map, minlength=n_genes)  # integers: exact
    choice = best.astype(np.int64)
    if method == "map" or post.size == 0:
        return post.k0 + choice
    need = np.rint(target - current).astype(np.int64)  # per gene: steps up (+) or down (−)
    if np.any(need != 0):
        ups, downs = _Cheapest(np.maximum(need, 0), FLUSH), _Cheapest(np.maximum(-need, 0), FLUSH)
        j = np.arange(w - 1)[None, :]
        for a, b, logp in post.chunks(size):
            cols = post.cols[a:b]
            for sign, pick in ((1, ups), (-1, downs)):
                rows = np.flatnonzero(sign * need[cols] > 0)
                if rows.size == 0:
                    continue
                lp, bst = logp[rows], best[a:b][rows].astype(np.int64)[:, None]
                with np.errstate(invalid="ignore"):
                    up = lp[:, :-1] - lp[:, 1:]  # cost of j → j + 1 at position j
                if sign > 0:
                    costs = _chain_costs(up, j >= bst, reverse=False)  # j → j + 1, j ≥ MAP
                else:
                    costs = _chain_costs(-up, j < bst, reverse=True)  # j + 1 → j, j < MAP
                e, steps = np.nonzero(np.isfinite(costs))
                pick.offer(cols[rows[e]], costs[e, steps], a + rows[e])
        ups.take(choice, 1)
        downs.take(choice, -1)
    np.clip(choice, 0, w - 1, out=choice)
    choice += post.k0
    return choice


def denoised(x_cells: sp.csr_matrix, post: NoisePosterior, noise: np.ndarray) -> sp.csr_matrix:
    """The cells' counts minus the chosen noise (never below 0)."""
    removed = sp.csr_matrix(
        (np.minimum(noise, post.x).astype(np.float64), post.cols, post.cell_ptr),
        shape=x_cells.shape,
    )
    out = (sp.csr_matrix(x_cells, dtype=np.float64) - removed).tocsr()
    out.data = np.maximum(out.data, 0)
    out.eliminate_zeros()
    return out
