"""``run.output=<file.h5ad>`` for CellWhisperer (read-only): the evaluation cells with their
embeddings (obsm), predicted labels and per-prompt scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from methods.cellwhisperer.check import eval_labels


def write_h5ad(outputs: dict[str, Any], adata: Any, path: Path) -> None:
    labels, _ = eval_labels(adata)
    out = adata[adata.obs["split"].to_numpy().astype(str) == "test"].copy()
    logits = np.asarray(outputs["zeroshot_logits"])
    out.obsm["X_cellwhisperer"] = np.asarray(outputs["cell_embeddings"])
    out.obsm["prompt_scores"] = logits
    out.obs["predicted_label"] = np.asarray(labels)[logits.argmax(1)]
    out.uns["prompt_labels"] = list(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
