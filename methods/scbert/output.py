"""``run.output=<file.h5ad>`` for scBERT (read-only): the evaluation cells with predictions,
probabilities, uncertainty and the unassigned flag in obs/obsm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from methods.scbert.check import classes_and_eval


def write_h5ad(outputs: dict[str, Any], adata: Any, path: Path, unassign: float) -> None:
    classes, _, _, rows = classes_and_eval(adata)
    out = adata[rows].copy()
    probs = np.asarray(outputs["probs"])
    out.obs["scbert_prediction"] = np.asarray(classes)[probs.argmax(1)]
    out.obs["scbert_confidence"] = probs.max(1)
    out.obs["scbert_entropy"] = np.asarray(outputs["entropy"])
    out.obs["scbert_mutual_info"] = np.asarray(outputs["mutual_info"])
    out.obs["scbert_unassigned"] = probs.max(1) < unassign
    out.obsm["scbert_probs"] = probs
    out.uns["scbert_classes"] = list(classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
