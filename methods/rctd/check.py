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


def _row_diff(a: np.ndarray, b: np.ndarray, relative: bool = False) -> np.ndarray:
    """Per row (pixel): the largest |a − b| (relative to max(1, |b|) with ``relative``); NaNs in
    the same places count as equal, in different places as infinitely far."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    d = np.abs(a - b)
    if relative:
        d = d / np.maximum(1.0, np.abs(b))
    both = np.isnan(a) & np.isnan(b)
    d = np.where(both, 0.0, np.where(np.isnan(d), np.inf, d))
    return d.max(axis=1) if d.shape[1] else np.zeros(len(d))


def _within(name: str, rows: np.ndarray, bound: float, tol: RCTDTolerance, out: dict) -> bool:
    """The outlier rule: all but ``outlier_fraction`` of the pixels within ``bound``, and none
    beyond ``hard_max`` × bound / max_abs_dw (the hard cap scales with the bound)."""
    if rows.size == 0:
        out[f"{name}_max"], out[f"{name}_outliers"] = 0.0, 0.0
        return True
    over = float(np.mean(rows > bound))
    out[f"{name}_max"], out[f"{name}_outliers"] = float(rows.max()), over
    hard = tol.hard_max_dw * bound / tol.max_abs_dw
    return over <= tol.outlier_fraction and float(rows.max()) <= hard


def _agree(name: str, a: np.ndarray, b: np.ndarray, need: float, out: dict) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    same = np.all(a.reshape(len(a), -1) == b.reshape(len(b), -1), axis=1) if a.size else a
    out[f"{name}_agreement"] = float(np.mean(same)) if a.size else 1.0
    return out[f"{name}_agreement"] >= need


def compare(
    outputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tol: RCTDTolerance,
    mode: str = "full",
) -> tuple[dict[str, float], bool]:
    """Every hashed output of the mode has a rule (calibration: methods/rctd/config.py):

    - ``pixel_mask`` and ``sigma`` equal (a filter or a grid choice that moved is wrong);
    - weights (and ``weights_doublet`` / ``sub_weights``): per pixel max|Δw| ≤ ``max_abs_dw``
      for all but ``outlier_fraction`` of the pixels (a pixel whose stopping iteration flips in
      a lower precision), none beyond ``hard_max_dw``; dominant types agreeing ≥
      ``dominant_agreement``; ``converged`` agreeing ≥ 1 − ``outlier_fraction``;
    - scores (``min_score``, ``singlet_score``): the same rule, relative, with ``score_rel``;
    - discrete calls (spot class, first/second type and class, chosen type sets, counts,
      confidence flags): agreeing ≥ ``class_agreement``.
    A baseline lacking this mode's outputs fails."""
    missing = [n for n in HASHED_OUTPUTS[mode] if n not in reference or n not in outputs]
    if missing:
        return {"missing_outputs": float(len(missing))}, False
    m: dict[str, float] = {}
    w, ref = np.asarray(outputs["weights"]), np.asarray(reference["weights"])
    same_pixels = np.array_equal(
        np.asarray(outputs["pixel_mask"]), np.asarray(reference["pixel_mask"])
    )
    if w.shape != ref.shape or not same_pixels:
        return {"max_abs_dw": float("inf"), "dominant_agreement": 0.0}, False
    sigma_same = np.array_equal(np.asarray(outputs["sigma"]), np.asarray(reference["sigma"]))
    m["sigma_equal"] = float(sigma_same)
    ok = sigma_same
    dw = _row_diff(w, ref)
    ok &= _within("dw", dw, tol.max_abs_dw, tol, m)
    m["max_abs_dw"] = m["dw_max"]
    m["dominant_agreement"] = dominant_agreement(w, ref)
    ok &= m["dominant_agreement"] >= tol.dominant_agreement
    if "converged" in reference:
        ok &= _agree("converged", outputs["converged"], reference["converged"],
                     1 - tol.outlier_fraction, m)  # fmt: skip
    need = tol.class_agreement
    if mode == "doublet":
        ok &= _within("dw_doublet", _row_diff(outputs["weights_doublet"],
                      reference["weights_doublet"]), tol.max_abs_dw, tol, m)  # fmt: skip
        for name in ("spot_class", "first_type", "second_type", "first_class", "second_class"):
            ok &= _agree(name, outputs[name], reference[name], need, m)
        for name in ("min_score", "singlet_score"):
            rows = _row_diff(outputs[name], reference[name], relative=True)
            ok &= _within(name, rows, tol.score_rel, tol, m)
        m["spot_class_agreement"] = m["spot_class_agreement"]
    elif mode == "multi":
        ok &= _within("dw_sub", _row_diff(outputs["sub_weights"], reference["sub_weights"]),
                      tol.max_abs_dw, tol, m)  # fmt: skip
        same = _same_sets(
            np.asarray(outputs["cell_type_indices"]), np.asarray(reference["cell_type_indices"])
        )
        m["type_set_agreement"] = float(same.mean()) if same.size else 1.0
        ok &= m["type_set_agreement"] >= need
        for name in ("n_types", "conf_list"):
            ok &= _agree(name, outputs[name], reference[name], need, m)
        rows = _row_diff(outputs["min_score"], reference["min_score"], relative=True)
        ok &= _within("min_score", rows, tol.score_rel, tol, m)
    return m, bool(ok)


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
