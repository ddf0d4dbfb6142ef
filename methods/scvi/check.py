"""scVI correctness (read-only surface): tolerance tier and ground-truth quality metrics."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harness.api import max_relative_l2
from methods.scvi.config import SCVITolerance


def knn(x: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Indices (n, k) of each row's k nearest other rows (Euclidean, brute force)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    k = min(k, n - 1)
    sq = (x**2).sum(axis=1)
    out = np.empty((n, k), dtype=np.int64)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        d = sq[lo:hi, None] + sq[None, :] - 2.0 * x[lo:hi] @ x.T
        d[np.arange(hi - lo), np.arange(lo, hi)] = np.inf
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        out[lo:hi] = np.take_along_axis(part, order, axis=1)
    return out


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean fraction of shared k nearest neighbours of each cell in spaces a and b."""
    if a.shape[0] < 2:
        return 1.0
    na, nb = knn(a, k), knn(b, k)
    shared = [np.intersect1d(na[i], nb[i], assume_unique=True).size for i in range(a.shape[0])]
    return float(np.mean(shared) / na.shape[1])


def linear_probe_r2(latent: np.ndarray, truth: np.ndarray) -> float:
    """R² of the true latent predicted linearly from the learned one (2-fold, held-out halves)."""
    n = latent.shape[0]
    design = np.hstack([latent, np.ones((n, 1))])
    half = n // 2
    scores = []
    for fit, test in ((slice(0, half), slice(half, n)), (slice(half, n), slice(0, half))):
        coef, *_ = np.linalg.lstsq(design[fit], truth[fit], rcond=None)
        resid = truth[test] - design[test] @ coef
        total = truth[test] - truth[test].mean(axis=0)
        scores.append(1.0 - (resid**2).sum() / (total**2).sum())
    return float(np.mean(scores))


def batch_mixing(x: np.ndarray, batch: np.ndarray, k: int = 15) -> float:
    """Observed / expected fraction of k-NN from other batches (1: fully mixed, 0: separated)."""
    labels, counts = np.unique(batch, return_inverse=False, return_counts=True)
    if labels.size < 2:
        return 1.0
    frac = dict(zip(labels, counts / counts.sum(), strict=True))
    nbr = knn(x, k)
    other = (batch[nbr] != batch[:, None]).mean(axis=1)
    expected = np.array([1.0 - frac[b] for b in batch])
    return float(other.mean() / expected.mean())


def label_purity(x: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Mean fraction of each cell's k nearest neighbours sharing its label."""
    return float((labels[knn(x, k)] == labels[:, None]).mean())


def pca(x: np.ndarray, n_comps: int) -> np.ndarray:
    """Top principal components of the rows of x (centred, via SVD)."""
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :n_comps] * s[:n_comps]


def lognorm(counts: np.ndarray) -> np.ndarray:
    """log1p of counts scaled to 1e4 per cell."""
    lib = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / np.maximum(lib, 1) * 1e4)


def param_distance(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """The largest relative L2 distance ||θ − θ_ref|| / ||θ_ref|| over the trained parameter
    tensors (``state.*``; BatchNorm's batch counter aside)."""
    return max_relative_l2(outputs, reference, ("state.",))


def compare(
    outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], tol: SCVITolerance
) -> tuple[dict[str, float], bool]:
    """Held-out ELBO within ``tol.elbo_rel``, latent k-NN overlap ≥ ``tol.knn_overlap`` and
    every trained parameter tensor within ``tol.param_rel`` (relative L2) of the baseline's.
    (The work counters — optimizer steps, learning rates, training cells, dropout calls — are
    compared for equality by the harness before this tier.)"""
    elbo, ref = (
        float(np.ravel(outputs["elbo_heldout"])[0]),
        float(np.ravel(reference["elbo_heldout"])[0]),
    )
    rel = abs(elbo - ref) / max(abs(ref), 1e-12)
    a, b = np.asarray(outputs["latent"]), np.asarray(reference["latent"])
    if a.shape[0] != b.shape[0]:
        return {"elbo_rel": rel, "knn_overlap": 0.0}, False
    overlap = knn_overlap(a, b, tol.knn_k)
    params = param_distance(outputs, reference)
    ok = rel <= tol.elbo_rel and overlap >= tol.knn_overlap and params <= tol.param_rel
    return {"elbo_rel": rel, "knn_overlap": overlap, "param_rel": params}, ok
