"""RCTD correctness (read-only surface): tolerance tier against a baseline, quality against
ground truth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from methods.rctd.config import HASHED_OUTPUTS, RCTDTolerance

SINGLET, CERTAIN, UNCERTAIN = 1, 2, 3


def row_normalise(weights: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (rows summing to 0 stay 0)."""
    sums = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)


def dominant_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose arg-max column agrees."""
    if a.shape[0] == 0:
        return 1.0
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def _same_sets(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the same set of type indices (order and -1 padding ignored)."""
    return np.all(np.sort(a, axis=1) == np.sort(b, axis=1), axis=1)


def compare(
    outputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tol: RCTDTolerance,
    mode: str = "full",
) -> tuple[dict[str, float], bool]:
    """max|Δw| and dominant-type agreement of full-mode weights; doublet: spot-class agreement;
    multi: agreement of the chosen type sets. A baseline lacking this mode's outputs fails."""
    missing = [n for n in HASHED_OUTPUTS[mode] if n not in reference or n not in outputs]
    if missing:
        return {"missing_outputs": float(len(missing))}, False
    w, ref = np.asarray(outputs["weights"]), np.asarray(reference["weights"])
    same_pixels = np.array_equal(
        np.asarray(outputs["pixel_mask"]), np.asarray(reference["pixel_mask"])
    )
    if w.shape != ref.shape or not same_pixels:
        return {"max_abs_dw": float("inf"), "dominant_agreement": 0.0}, False
    max_dw = float(np.max(np.abs(w - ref))) if w.size else 0.0
    agree = dominant_agreement(w, ref)
    metrics = {"max_abs_dw": max_dw, "dominant_agreement": agree}
    ok = max_dw <= tol.max_abs_dw and agree >= tol.dominant_agreement
    if mode == "doublet":
        same = np.asarray(outputs["spot_class"]) == np.asarray(reference["spot_class"])
        metrics["spot_class_agreement"] = float(same.mean()) if same.size else 1.0
        ok = ok and metrics["spot_class_agreement"] >= tol.class_agreement
    elif mode == "multi":
        same = _same_sets(
            np.asarray(outputs["cell_type_indices"]), np.asarray(reference["cell_type_indices"])
        )
        metrics["type_set_agreement"] = float(same.mean()) if same.size else 1.0
        ok = ok and metrics["type_set_agreement"] >= tol.class_agreement
    return metrics, ok


def quality(
    outputs: Mapping[str, Any], truth: np.ndarray, n_true: np.ndarray | None, mode: str = "full"
) -> dict[str, float]:
    """Agreement with known true weights (``truth``: rows of the kept pixels) and, with
    ``n_true`` (true number of types per kept pixel), the mode's singlet / doublet calls."""
    est = row_normalise(np.asarray(outputs["weights"]))
    metrics = {
        "truth_dominant_accuracy": dominant_agreement(est, truth),
        "truth_mean_abs_error": float(np.mean(np.abs(est - truth))) if est.size else 0.0,
    }
    if n_true is None or not n_true.size:
        return metrics
    dominant = np.argmax(truth, axis=1)
    if mode == "doublet":
        spot = np.asarray(outputs["spot_class"])
        one, two = n_true == 1, n_true == 2
        doublet = (spot == CERTAIN) | (spot == UNCERTAIN)
        if one.any():
            metrics["truth_singlet_called_singlet"] = float(np.mean(spot[one] == SINGLET))
        if two.any():
            metrics["truth_doublet_called_doublet"] = float(np.mean(doublet[two]))
        first = np.asarray(outputs["first_type"])
        metrics["truth_first_type_accuracy"] = float(np.mean(first == dominant))
    elif mode == "multi":
        n_types = np.asarray(outputs["n_types"])
        metrics["truth_n_types_accuracy"] = float(np.mean(n_types == n_true))
        chosen = np.asarray(outputs["cell_type_indices"])
        present = truth > 0
        hit = np.zeros(len(chosen), dtype=bool)
        for i, (row, pres) in enumerate(zip(chosen, present, strict=True)):
            hit[i] = set(row[row >= 0].tolist()) == set(np.flatnonzero(pres).tolist())
        metrics["truth_type_set_accuracy"] = float(hit.mean())
    return metrics
