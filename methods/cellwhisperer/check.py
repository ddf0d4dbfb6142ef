"""CellWhisperer correctness (read-only surface): zero-shot quality against the labels and the
tolerance tier against a baseline, from the outputs only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.api import max_relative_l2
from methods.cellwhisperer import zeroshot
from methods.cellwhisperer.config import CellWhispererTolerance


def eval_labels(adata: Any) -> tuple[list[str], np.ndarray]:
    """The label names (prompt order) and the evaluation cells' label indices."""
    col = adata.obs["cell_type"]
    labels = (
        [str(v) for v in col.cat.categories]
        if hasattr(col, "cat")
        else sorted(set(col.astype(str)))
    )
    index = {k: i for i, k in enumerate(labels)}
    split = adata.obs["split"].to_numpy().astype(str)
    return labels, np.array([index[str(v)] for v in col.to_numpy()[split == "test"]])


def quality(outputs: Mapping[str, Any], adata: Any) -> dict[str, float]:
    _, y = eval_labels(adata)
    scale = float(np.exp(np.ravel(outputs["log_scale"])[0]))
    return zeroshot.metrics(
        np.asarray(outputs["cell_embeddings"], dtype=np.float64),
        np.asarray(outputs["caption_embeddings"], dtype=np.float64),
        np.asarray(outputs["prompt_embeddings"], dtype=np.float64), scale, y,
    )  # fmt: skip


def compare(
    outputs: Mapping[str, Any], reference: Mapping[str, Any], tol: CellWhispererTolerance
) -> tuple[dict[str, float], bool]:
    """Zero-shot predictions on the evaluation set agreeing ≥ ``label_agreement``; zero-shot
    logits within ``logits_rel`` (of the largest |logit|); every head tensor within
    ``head_rel`` (relative L2); the learnt temperature t (``log_scale``) within
    ``log_scale_abs`` — a global scalar that seeds and random streams leave in place but less
    training (a frozen t, skipped updates, fewer epochs) does not."""
    lg = np.asarray(outputs["zeroshot_logits"], dtype=np.float64)
    ref = np.asarray(reference["zeroshot_logits"], dtype=np.float64)
    if lg.shape != ref.shape:
        return {"label_agreement": 0.0}, False
    m = {
        "label_agreement": float(np.mean(lg.argmax(1) == ref.argmax(1))),
        "logits_rel": float(np.max(np.abs(lg - ref)) / max(np.max(np.abs(ref)), 1e-12)),
    }
    worst = max_relative_l2(outputs, reference, ("cell_head.", "text_head.", "log_scale"))
    m["head_rel"] = worst
    t = np.ravel(np.asarray(outputs.get("log_scale", np.nan), dtype=np.float64))
    t_ref = np.ravel(np.asarray(reference.get("log_scale", np.nan), dtype=np.float64))
    m["log_scale_abs"] = float(np.max(np.abs(t - t_ref))) if t.shape == t_ref.shape else np.inf
    ok = (
        m["label_agreement"] >= tol.label_agreement
        and m["logits_rel"] <= tol.logits_rel
        and worst <= tol.head_rel
        and m["log_scale_abs"] <= tol.log_scale_abs
    )
    return m, ok
