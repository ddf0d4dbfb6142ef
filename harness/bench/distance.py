"""Distances between a run's outputs and its baseline's, for the methods' tolerance tiers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def max_relative_l2(
    outputs: Mapping[str, Any], reference: Mapping[str, Any], prefixes: tuple[str, ...]
) -> float:
    """The largest ||a − b|| / ||b|| over the reference tensors whose names start with one of
    ``prefixes`` (BatchNorm's ``num_batches_tracked`` counters aside); ``inf`` when one is
    missing from ``outputs``, has another shape (a differently shaped model is not close) or is
    not finite."""
    worst = 0.0
    for name, ref in reference.items():
        if not name.startswith(prefixes) or name.endswith("num_batches_tracked"):
            continue
        if name not in outputs:
            return float("inf")
        a, b = np.asarray(outputs[name], dtype=np.float64), np.asarray(ref, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        d = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
        if not np.isfinite(d):  # a NaN (or inf) tensor is not close: max() would drop a NaN
            return float("inf")
        worst = max(worst, d)
    return worst
