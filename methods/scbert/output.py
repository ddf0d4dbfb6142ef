"""``run.output=<file.h5ad>`` for scBERT (read-only): every input cell.

A copy of the input AnnData (counts, ``obs["label"]``, ``obs["split"]`` train / val / test,
``obs["novel"]``) with, for every cell: ``obs["scbert_prediction"]`` (categorical class
name), ``obs["scbert_confidence"]`` (the top mean probability), ``obs["scbert_entropy"]``,
``obs["scbert_mutual_info"]``, ``obs["scbert_unassigned"]`` (confidence below
``method.unassign_threshold``); ``obsm["scbert_probs"]`` (a DataFrame, one column per class);
``uns["scbert_classes"]``. The test split's values are the timed run's (those the quality
metrics score); the other cells are predicted by one more Monte-Carlo pass of the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.api import to_numpy
from methods.scbert.check import classes_and_eval

FIELDS = ("probs", "entropy", "mutual_info")


def write_h5ad(
    outputs: dict[str, Any],
    adata: Any,
    path: Path,
    unassign: float,
    predict: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> None:
    """Write the file described in the module doc; ``predict(rows)`` gives the other cells'."""
    classes, _, _, test = classes_and_eval(adata)
    other = np.setdiff1d(np.arange(adata.n_obs), test)
    full = {k: np.zeros((adata.n_obs, *to_numpy(outputs[k]).shape[1:])) for k in FIELDS}
    for k in FIELDS:
        full[k][test] = to_numpy(outputs[k])
    if other.size:
        rest = predict(other)
        for k in FIELDS:
            full[k][other] = rest[k]
    probs = full["probs"]
    out = adata.copy()
    out.obs["scbert_prediction"] = pd.Categorical.from_codes(probs.argmax(1), categories=classes)
    out.obs["scbert_confidence"] = probs.max(1)
    out.obs["scbert_entropy"] = full["entropy"]
    out.obs["scbert_mutual_info"] = full["mutual_info"]
    out.obs["scbert_unassigned"] = probs.max(1) < unassign
    out.obsm["scbert_probs"] = pd.DataFrame(probs, index=out.obs_names, columns=list(classes))
    out.uns["scbert_classes"] = list(classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
