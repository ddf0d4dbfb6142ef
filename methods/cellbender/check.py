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
    profile within ``ambient_rel`` (of its largest entry); denoised counts of the droplets both
    call cells within ``denoised_rel`` (relative L1)."""
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
    ok = (
        m["cell_agreement"] >= tol.cell_agreement
        and m["probability_abs"] <= tol.probability_abs
        and m["ambient_rel"] <= tol.ambient_rel
        and m["denoised_rel"] <= tol.denoised_rel
    )
    return m, ok


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
