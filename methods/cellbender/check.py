"""CellBender correctness (read-only surface): the tolerance tier against a baseline and the
quality against ground truth, computed from the outputs only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from methods.cellbender.config import CellBenderTolerance


def compare(
    outputs: Mapping[str, Any], reference: Mapping[str, Any], tol: CellBenderTolerance
) -> tuple[dict[str, float], bool]:
    """Cell calls agreeing ≥ ``cell_agreement``; mean |Δp| ≤ ``probability_abs``; ambient
    profile within ``ambient_rel`` (of its largest entry); over the droplets both call cells:
    denoised counts within ``denoised_rel`` (relative L1), the counts removed per gene within
    ``removed_gene_rel`` (Σ_g |Δremoved_g| / Σ removed_ref; the raw counts are the same, so
    Δremoved = −Δdenoised), the spread (std) of the background fractions within
    ``background_spread_rel`` (relative; fewer posterior draws add per-cell noise); the mean
    training ELBO of the last 10 epochs within ``elbo_rel`` (relative; less training shows)."""
    p, p_ref = np.asarray(outputs["cell_probability"]), np.asarray(reference["cell_probability"])
    if p.shape != p_ref.shape:
        return {"cell_agreement": 0.0}, False
    calls, calls_ref = p > 0.5, p_ref > 0.5
    m = {
        "cell_agreement": float(np.mean(calls == calls_ref)),
        "probability_abs": float(np.mean(np.abs(p - p_ref))),
    }
    amb, amb_ref = np.asarray(outputs["ambient"]), np.asarray(reference["ambient"])
    m["ambient_rel"] = float(np.max(np.abs(amb - amb_ref)) / max(np.max(amb_ref), 1e-12))
    both = calls & calls_ref
    d = sp.csr_matrix(outputs["denoised"])[both]
    d_ref = sp.csr_matrix(reference["denoised"])[both]
    denom = max(float(abs(d_ref).sum()), 1.0)
    m["denoised_rel"] = float(abs(d - d_ref).sum()) / denom
    f = np.asarray(outputs["background_fraction"], dtype=np.float64)[both]
    f_ref = np.asarray(reference["background_fraction"], dtype=np.float64)[both]
    kept_ref = np.asarray(d_ref.sum(axis=1)).ravel()  # raw = kept / (1 − removed fraction)
    removed_ref = float(np.sum(kept_ref * f_ref / np.maximum(1.0 - f_ref, 1e-12)))
    per_gene = np.asarray((d_ref - d).sum(axis=0)).ravel()
    m["removed_gene_rel"] = float(np.abs(per_gene).sum()) / max(removed_ref, 1.0)
    spread_ref = float(np.std(f_ref)) if f_ref.size else 0.0
    spread = float(np.std(f)) if f.size else 0.0
    m["background_spread_rel"] = abs(spread - spread_ref) / max(spread_ref, 1e-12)
    m["elbo_rel"] = _elbo_rel(outputs.get("elbo_train"), reference.get("elbo_train"))
    ok = (
        m["cell_agreement"] >= tol.cell_agreement
        and m["probability_abs"] <= tol.probability_abs
        and m["ambient_rel"] <= tol.ambient_rel
        and m["denoised_rel"] <= tol.denoised_rel
        and m["removed_gene_rel"] <= tol.removed_gene_rel
        and m["background_spread_rel"] <= tol.background_spread_rel
        and m["elbo_rel"] <= tol.elbo_rel
    )
    return m, ok


def _elbo_rel(curve: Any, curve_ref: Any, last: int = 10) -> float:
    """|mean − mean_ref| / |mean_ref| of the training ELBO over the last ``last`` epochs of
    each curve (0 when the reference has no curve; inf when only the run lacks one)."""
    e_ref = np.ravel(np.asarray(curve_ref, dtype=np.float64)) if curve_ref is not None else None
    if e_ref is None or e_ref.size == 0:
        return 0.0
    e = np.ravel(np.asarray(curve, dtype=np.float64)) if curve is not None else np.zeros(0)
    k = min(last, e.size, e_ref.size)
    if k == 0:
        return float("inf")
    a, b = float(np.mean(e[-k:])), float(np.mean(e_ref[-k:]))
    return abs(a - b) / max(abs(b), 1e-12)


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.sum(pred & truth))
    denom = float(np.sum(pred) + np.sum(truth))
    return 2 * tp / denom if denom else 1.0


def quality(outputs: Mapping[str, Any], adata: Any) -> dict[str, float]:
    """Against the dataset's truth (when it has one): cell-call F1, the ambient profile's
    Pearson correlation with the true χ_ambient, the fraction of true background removed and
    of true signal kept (over true cells called cells), and per-gene over-removal."""
    metrics: dict[str, float] = {}
    p = np.asarray(outputs["cell_probability"])
    metrics["cells_called"] = float(np.sum(p > 0.5))
    if "cell" not in adata.obs:
        return metrics
    truth = adata.obs["cell"].to_numpy(dtype=bool)
    calls = p > 0.5
    metrics["cell_f1"] = _f1(calls, truth)
    if "chi_ambient" in adata.uns:
        true_amb = np.asarray(adata.uns["chi_ambient"], dtype=np.float64)
        metrics["ambient_corr"] = float(np.corrcoef(np.asarray(outputs["ambient"]), true_amb)[0, 1])
    if "counts_bkg" in adata.layers and "counts_true" in adata.layers:
        both = calls & truth
        raw = sp.csr_matrix(adata.X, dtype=np.float64)[both]
        bkg = sp.csr_matrix(adata.layers["counts_bkg"], dtype=np.float64)[both]
        sig = sp.csr_matrix(adata.layers["counts_true"], dtype=np.float64)[both]
        clean = sp.csr_matrix(outputs["denoised"], dtype=np.float64)[both]
        removed = raw - clean
        metrics["background_removed"] = float(removed.minimum(bkg).sum() / max(bkg.sum(), 1.0))
        metrics["signal_kept"] = float(clean.minimum(sig).sum() / max(sig.sum(), 1.0))
        per_gene_removed = np.asarray(removed.sum(axis=0)).ravel()
        per_gene_bkg = np.asarray(bkg.sum(axis=0)).ravel()
        over = np.maximum(per_gene_removed - per_gene_bkg, 0.0)
        metrics["over_removal"] = float(over.sum() / max(per_gene_removed.sum(), 1.0))
    return metrics
