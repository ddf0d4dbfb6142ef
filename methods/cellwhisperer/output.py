"""``run.output=<file.h5ad>`` for CellWhisperer (read-only): every input cell.

A copy of the input AnnData (counts, ``obs["caption"]``, ``obs["cell_type"]``, ``obs["split"]``)
with, for every cell: ``obsm["X_cellwhisperer"]`` (the L2-normalised transcriptome embedding),
``obsm["X_cellwhisperer_caption"]`` (its caption's embedding), ``obsm["prompt_scores"]`` (a
DataFrame of zero-shot logits, one column per label), ``obs["predicted_label"]``
(categorical); ``uns["prompt_labels"]`` and ``uns["prompt_embeddings"]``. The test split's
values are the timed run's (those the zero-shot metrics score); the other cells are embedded
by one more pass of the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.api import to_numpy
from methods.cellwhisperer.check import eval_labels


def write_h5ad(
    outputs: dict[str, Any],
    adata: Any,
    path: Path,
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> None:
    """Write the file described in the module doc; ``encode(rows)`` embeds the other cells
    (cell and caption embeddings)."""
    labels, _ = eval_labels(adata)
    test = np.flatnonzero(adata.obs["split"].to_numpy().astype(str) == "test")
    other = np.setdiff1d(np.arange(adata.n_obs), test)
    cells_t, texts_t = to_numpy(outputs["cell_embeddings"]), to_numpy(outputs["caption_embeddings"])
    cells = np.zeros((adata.n_obs, cells_t.shape[1]), dtype=np.float32)
    texts = np.zeros((adata.n_obs, texts_t.shape[1]), dtype=np.float32)
    cells[test], texts[test] = cells_t, texts_t
    if other.size:
        cells[other], texts[other] = encode(other)
    prompts = to_numpy(outputs["prompt_embeddings"]).astype(np.float64)
    scale = float(np.exp(np.ravel(to_numpy(outputs["log_scale"]))[0]))
    logits = scale * cells.astype(np.float64) @ prompts.T
    logits[test] = to_numpy(outputs["zeroshot_logits"])
    out = adata.copy()
    out.obsm["X_cellwhisperer"] = cells
    out.obsm["X_cellwhisperer_caption"] = texts
    out.obsm["prompt_scores"] = pd.DataFrame(logits, index=out.obs_names, columns=list(labels))
    out.obs["predicted_label"] = pd.Categorical.from_codes(logits.argmax(1), categories=labels)
    out.uns["prompt_labels"] = list(labels)
    out.uns["prompt_embeddings"] = prompts
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
