"""Zero-shot scoring and retrieval (read-only evaluation), from embeddings only.

Cells are scored against one prompt per label: score = exp(t) · text · cellᵀ (optionally after
averaging the normalised cell embeddings within groups); the predicted label is the best
prompt. Metrics: top-1 accuracy, macro-F1, macro one-vs-rest ROC-AUC; retrieval recall@k of
each evaluation cell by its own caption (text → cell) and of the caption by its cell
(cell → text), and text → label group (the caption's cell's group among the group means).
"""

from __future__ import annotations

import numpy as np


def scores(cells: np.ndarray, prompts: np.ndarray, scale: float) -> np.ndarray:
    """(cells, prompts) zero-shot logits."""
    return scale * cells @ prompts.T


def group_means(cells: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    means = np.zeros((k, cells.shape[1]))
    for g in range(k):
        if np.any(groups == g):
            m = cells[groups == g].mean(0)
            means[g] = m / max(np.linalg.norm(m), 1e-12)
    return means


def recall_at(sim: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Rows: queries; the fraction whose true column is among the top k."""
    top = np.argsort(-sim, axis=1)[:, :k]
    return float(np.mean(np.any(top == truth[:, None], axis=1)))


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    out = []
    for c in np.unique(truth):
        tp = np.sum((pred == c) & (truth == c))
        out.append(2 * tp / (np.sum(pred == c) + np.sum(truth == c)))
    return float(np.mean(out))


def auroc_ovr(logits: np.ndarray, truth: np.ndarray) -> float:
    from scipy.stats import rankdata

    aucs = []
    for c in np.unique(truth):
        pos = truth == c
        if pos.all():
            continue
        r = rankdata(logits[:, c])
        aucs.append((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))
    return float(np.mean(aucs)) if aucs else float("nan")


def metrics(cells: np.ndarray, captions: np.ndarray, prompts: np.ndarray, scale: float,
            labels: np.ndarray) -> dict[str, float]:  # fmt: skip
    logits = scores(cells, prompts, scale)
    pred = logits.argmax(1)
    n = cells.shape[0]
    sim = captions @ cells.T  # text → cell
    out = {
        "zeroshot_top1": float(np.mean(pred == labels)),
        "zeroshot_macro_f1": macro_f1(pred, labels),
        "zeroshot_auroc": auroc_ovr(logits, labels),
    }
    for k in (1, 5, 10):
        out[f"recall_text_to_cell@{k}"] = recall_at(sim, np.arange(n), k)
        out[f"recall_cell_to_text@{k}"] = recall_at(sim.T, np.arange(n), k)
    means = group_means(cells, labels, prompts.shape[0])
    for k in (1, 5):
        out[f"recall_text_to_group@{k}"] = recall_at(captions @ means.T, labels, k)
    return out
