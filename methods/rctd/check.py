"""RCTD correctness: tolerance tier against a baseline and quality against ground truth."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from methods.rctd.config import RCTDTolerance


def row_normalise(weights: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (rows summing to 0 stay 0)."""
    sums = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)


def dominant_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose arg-max column agrees."""
    if a.shape[0] == 0:
        return 1.0
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def compare(
    outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], tol: RCTDTolerance
) -> tuple[dict[str, float], bool]:
    """max|Δw| and dominant-type agreement of full-mode weights; pass if both within ``tol``."""
    w, ref = np.asarray(outputs["weights"]), np.asarray(reference["weights"])
    if w.shape != ref.shape:
        return {"max_abs_dw": float("inf"), "dominant_agreement": 0.0}, False
    max_dw = float(np.max(np.abs(w - ref))) if w.size else 0.0
    agree = dominant_agreement(w, ref)
    ok = max_dw <= tol.max_abs_dw and agree >= tol.dominant_agreement
    return {"max_abs_dw": max_dw, "dominant_agreement": agree}, ok


def quality(weights: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Agreement with known true weights (rows of ``truth`` for the same pixels)."""
    est = row_normalise(weights)
    return {
        "truth_dominant_accuracy": dominant_agreement(est, truth),
        "truth_mean_abs_error": float(np.mean(np.abs(est - truth))) if est.size else 0.0,
    }
