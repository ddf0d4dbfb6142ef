"""``run.output=<file.h5ad>`` for scVI (read-only): every input cell and gene.

A copy of the input AnnData (X the input counts; a backed input gives obs and var only) with

- ``obsm["X_scVI"]``: the latent means (``n_latent`` columns) of every cell the filters kept,
  computed by the read-only ``evaluate.py`` from the trained parameters; the evaluation cells
  carry exactly the hashed ``latent``. Cells the filters dropped have NaN rows;
- ``obs["scvi_split"]``: ``train`` / ``validation`` (held out) / ``filtered``;
- ``var["scvi_used"]``: the genes the model saw (``method.n_top_genes`` and the filters);
- ``uns["scvi"]``: n_latent, the number of evaluation cells, the configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.api import to_numpy
from methods.scvi.evaluate import evaluate

SPLITS = ["train", "validation", "filtered"]
CHUNK = 2048  # cells per evaluation pass (dense float64 rows)


def all_latents(
    params: Mapping[str, Any], shape: Any, host: Any, seed: int, skip: np.ndarray
) -> np.ndarray:
    """Latent means of every kept cell (rows of ``host``); rows in ``skip`` are left NaN."""
    n = host.n_cells
    out = np.full((n, shape.n_latent), np.nan)
    todo = np.setdiff1d(np.arange(n), skip)
    for lo in range(0, todo.size, CHUNK):
        idx = todo[lo : lo + CHUNK]
        x = torch.as_tensor(host.rows(idx).toarray(), dtype=torch.float64)
        res = evaluate(
            params,
            shape,
            x,
            torch.as_tensor(host.batch[idx]),
            torch.as_tensor(host.log_lib[idx]),
            torch.as_tensor(host.lgamma_x1[idx]),
            seed,
        )
        out[idx] = to_numpy(res["latent"])
    return out


def write_h5ad(
    outputs: Mapping[str, Any], adata: Any, state: Any, host: Any, cfg: Any, path: Path
) -> None:
    """Write the file described in the module doc."""
    import anndata

    params = {k.removeprefix("state."): v for k, v in outputs.items() if k.startswith("state.")}
    train_idx, eval_idx = state.split
    latent = all_latents(params, state.shape, host, cfg.seed, eval_idx)
    latent[eval_idx] = to_numpy(outputs["latent"])
    full = np.full((adata.n_obs, state.shape.n_latent), np.nan, dtype=np.float32)
    full[state.cells] = latent
    split = np.full(adata.n_obs, SPLITS.index("filtered"))
    held = np.setdiff1d(np.arange(state.cells.size), train_idx)
    split[state.cells[train_idx]] = SPLITS.index("train")
    split[state.cells[held]] = SPLITS.index("validation")
    if adata.isbacked:
        out = anndata.AnnData(obs=adata.obs.copy(), var=adata.var.copy())
    else:
        out = adata.copy()
    out.obsm["X_scVI"] = full
    out.obs["scvi_split"] = pd.Categorical.from_codes(split, categories=SPLITS)
    used = np.zeros(adata.n_vars, dtype=bool)
    used[state.genes] = True
    out.var["scvi_used"] = used
    config = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if isinstance(v, (bool, int, float, str)) and not k.startswith("_")
    }
    out.uns["scvi"] = {
        "n_latent": int(state.shape.n_latent),
        "n_eval_cells": int(eval_idx.size),
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
