"""scBERT correctness (read-only surface): tolerance against a baseline, quality against the
labels — computed from the outputs only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.api import max_relative_l2
from methods.scbert.config import ScBERTTolerance


def classes_and_eval(adata: Any) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(classes, evaluation labels as class indices (−1: unseen), novel mask, eval rows)."""
    split = adata.obs["split"].to_numpy().astype(str)
    novel = adata.obs["novel"].to_numpy() if "novel" in adata.obs else np.zeros(adata.n_obs, bool)
    labels = adata.obs["label"].astype(str).to_numpy()
    classes = sorted(set(labels[(split == "train") & ~novel]))
    index = {k: i for i, k in enumerate(classes)}
    rows = np.flatnonzero(split == "test")
    y = np.array([index.get(lab, -1) for lab in labels[rows]])
    return classes, y, novel[rows], rows


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    scores = []
    for c in np.unique(truth):
        tp = np.sum((pred == c) & (truth == c))
        scores.append(2 * tp / (np.sum(pred == c) + np.sum(truth == c)))
    return float(np.mean(scores)) if scores else 0.0


def ece(probs: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(np.mean(pred[m] == truth[m]) - conf[m].mean())
    return float(total)


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the ``positive`` class (ties averaged)."""
    from scipy.stats import rankdata

    pos, neg = int(positive.sum()), int((~positive).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def quality(outputs: Mapping[str, Any], adata: Any, unassign: float) -> dict[str, float]:
    _, y, novel, _ = classes_and_eval(adata)
    probs = np.asarray(outputs["probs"], dtype=np.float64)
    pred = probs.argmax(1)
    known = ~novel
    m = {
        "accuracy": float(np.mean(pred[known] == y[known])) if known.any() else float("nan"),
        "macro_f1": macro_f1(pred[known], y[known]) if known.any() else float("nan"),
        "ece": ece(probs[known], y[known]) if known.any() else float("nan"),
        "unassigned_fraction": float(np.mean(probs.max(1) < unassign)),
    }
    if novel.any():
        m["novel_entropy_auroc"] = auroc(np.asarray(outputs["entropy"]), novel)
        m["novel_mi_auroc"] = auroc(np.asarray(outputs["mutual_info"]), novel)
    return m


def compare(
    outputs: Mapping[str, Any], reference: Mapping[str, Any], tol: ScBERTTolerance
) -> tuple[dict[str, float], bool]:
    """Predictions on the evaluation set agreeing ≥ ``prediction_agreement``; logits within
    ``logits_rel`` (of the largest |logit|); every head tensor within ``head_rel`` (relative
    L2; a differently pruned head has other shapes: wrong); the mean mutual information (BALD)
    over the evaluation set within ``mutual_info_rel`` (relative) — fewer Monte-Carlo head
    samples underestimate it (T samples see about 1 − 1/T of it), less training moves it."""
    lg, ref = (
        np.asarray(outputs["logits"], dtype=np.float64),
        np.asarray(reference["logits"], dtype=np.float64),
    )
    if lg.shape != ref.shape:
        return {"prediction_agreement": 0.0}, False
    m = {
        "prediction_agreement": float(np.mean(lg.argmax(1) == ref.argmax(1))),
        "logits_rel": float(np.max(np.abs(lg - ref)) / max(np.max(np.abs(ref)), 1e-12)),
    }
    worst = max_relative_l2(outputs, reference, ("head.",))
    m["head_rel"] = worst
    mi = np.asarray(outputs.get("mutual_info", np.nan), dtype=np.float64)
    mi_ref = np.asarray(reference.get("mutual_info", np.nan), dtype=np.float64)
    m["mutual_info_rel"] = (
        float(abs(mi.mean() - mi_ref.mean()) / max(abs(mi_ref.mean()), 1e-12))
        if mi.shape == mi_ref.shape
        else np.inf
    )
    ok = (m["prediction_agreement"] >= tol.prediction_agreement and m["logits_rel"] <= tol.logits_rel
          and worst <= tol.head_rel and m["mutual_info_rel"] <= tol.mutual_info_rel)  # fmt: skip
    return m, ok
