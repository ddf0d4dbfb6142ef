"""RCTD result file (``run.output=<path.h5ad>``; read-only glue).

A copy of the spatial AnnData with, for every pixel (rows of pixels the filters dropped are
NaN / missing, ``obs['rctd_kept']`` False):

- ``obsm['rctd_weights']`` full-mode weights (raw), ``obsm['rctd_weights_norm']`` (rows sum 1):
  DataFrames with one column per cell type (spacexr's ``results$weights``);
- ``obs['rctd_first_type']``, ``obs['rctd_second_type']`` (categorical type names): the two
  largest full-mode weights, or the doublet pair, or the first two multi-mode types;
- doublet mode: ``obs['rctd_spot_class']`` (categorical: reject, singlet, doublet_certain,
  doublet_uncertain), ``obsm['rctd_weights_doublet']`` (a DataFrame: first_type, second_type),
  ``obs['rctd_min_score']``, ``obs['rctd_singlet_score']``, ``obs['rctd_first_class']``,
  ``obs['rctd_second_class']``;
- multi mode: ``obs['rctd_n_types']``, ``obs['rctd_cell_types']`` (names joined by ``,``),
  ``obsm['rctd_sub_weights']``, ``obsm['rctd_cell_type_indices']`` (-1 padded),
  ``obsm['rctd_conf_list']``, ``obs['rctd_min_score']``;
- ``uns['rctd']``: sigma, mode, cell_type_names, config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.api import to_numpy
from methods.rctd.check import row_normalise
from methods.rctd.doublet import SPOT_CLASSES

DOUBLET_COLUMNS = ["first_type", "second_type"]
_BASE_KEYS = {"name", "_target_", "_schema_", "editable", "readonly", "search_space"}


def _plain(value: Any) -> Any:
    """A config value h5ad can store (None becomes the string "None")."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value] if value else "[]"
    return "None" if value is None else value


def _expand(values: np.ndarray, mask: np.ndarray, fill: Any) -> np.ndarray:
    out = np.full((mask.size, *values.shape[1:]), fill, dtype=np.result_type(values, type(fill)))
    out[mask] = values
    return out


def _types(codes: np.ndarray, mask: np.ndarray, names: list[str]) -> pd.Categorical:
    full = _expand(codes.astype(np.int64), mask, -1)
    return pd.Categorical.from_codes(np.where(full >= 0, full, -1), categories=names)


def write_h5ad(
    outputs: Mapping[str, Any], spatial: Any, path: Path, names: list[str], cfg: Any
) -> None:
    """Write the annotated copy of ``spatial`` to ``path`` (module doc)."""
    out = {k: to_numpy(v) for k, v in outputs.items()}
    mask = out["pixel_mask"].astype(bool)
    adata = spatial.copy()
    weights = out["weights"].astype(np.float64)
    adata.obs["rctd_kept"] = mask
    index = adata.obs_names
    adata.obsm["rctd_weights"] = pd.DataFrame(_expand(weights, mask, np.nan), index, names)
    norm = _expand(row_normalise(weights), mask, np.nan)
    adata.obsm["rctd_weights_norm"] = pd.DataFrame(norm, index, names)
    top = np.argsort(-weights, axis=1, kind="stable")
    first, second = top[:, 0], top[:, 1]
    if cfg.mode == "doublet":
        first, second = out["first_type"], out["second_type"]
        codes = _expand(out["spot_class"].astype(np.int64), mask, -1)
        adata.obs["rctd_spot_class"] = pd.Categorical.from_codes(codes, categories=SPOT_CLASSES)
        pair = _expand(out["weights_doublet"], mask, np.nan)
        adata.obsm["rctd_weights_doublet"] = pd.DataFrame(pair, index, DOUBLET_COLUMNS)
        for key in ("min_score", "singlet_score"):
            adata.obs[f"rctd_{key}"] = _expand(out[key].astype(np.float64), mask, np.nan)
        for key in ("first_class", "second_class"):
            adata.obs[f"rctd_{key}"] = _expand(out[key].astype(bool), mask, False)
    elif cfg.mode == "multi":
        idx = out["cell_type_indices"].astype(np.int64)
        first, second = idx[:, 0], idx[:, 1] if idx.shape[1] > 1 else np.full(len(idx), -1)
        adata.obs["rctd_n_types"] = _expand(out["n_types"].astype(np.int64), mask, 0)
        joined = np.array([",".join(names[i] for i in row if i >= 0) for row in idx], dtype=object)
        adata.obs["rctd_cell_types"] = _expand(joined, mask, "")
        adata.obsm["rctd_sub_weights"] = _expand(out["sub_weights"], mask, np.nan)
        adata.obsm["rctd_cell_type_indices"] = _expand(idx, mask, -1)
        adata.obsm["rctd_conf_list"] = _expand(out["conf_list"].astype(bool), mask, False)
        adata.obs["rctd_min_score"] = _expand(out["min_score"].astype(np.float64), mask, np.nan)
    adata.obs["rctd_first_type"] = _types(first, mask, names)
    adata.obs["rctd_second_type"] = _types(second, mask, names)
    config = {
        f.name: _plain(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name not in _BASE_KEYS
    }
    config["tol"] = _plain(dataclasses.asdict(cfg.tol))
    adata.uns["rctd"] = {
        "sigma": float(out["sigma"].reshape(-1)[0]),
        "mode": cfg.mode,
        "cell_type_names": list(names),
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
