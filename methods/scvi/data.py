"""scVI datasets and filters (read-only surface): loaders returning ``{"cells": AnnData}``.

Contract: X holds raw counts (cells × genes; CSR, dense, or backed on disk for streaming),
``obs["batch"]`` is categorical (one level when the data have no batches). Synthetic data add
``obsm["true_latent"]`` (the ground-truth z), ``obs["cell_type"]`` and census-style columns
(dataset_id, assay, suspension_type, donor_id) whose concatenation is the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from omegaconf import MISSING

from harness.api import (
    DatasetConfig,
    UserError,
    counts_matrix,
    pbmc68k_counts,
    read_h5ad,
    resolve_user_path,
    rng,
)

if TYPE_CHECKING:
    from anndata import AnnData

ROLE = "cells"
BATCH = "batch"
CENSUS_KEYS = ["dataset_id", "assay", "suspension_type", "donor_id"]
_BLOCK = 4096  # cells generated per block (part of the seeded recipe)


def batch_from_keys(obs: pd.DataFrame, keys: list[str], where: str) -> pd.Categorical:
    """The batch as the concatenation of ``keys`` columns (``a|b|c``); one level for ``[]``."""
    if not keys:
        return pd.Categorical(np.zeros(len(obs), dtype=np.int8).astype(str))
    missing = [k for k in keys if k not in obs.columns]
    if missing:
        raise UserError(f"{where}: obs has no column(s) {missing} (columns: {list(obs.columns)})")
    parts = [obs[k].astype(str).to_numpy() for k in keys]
    joined = (
        parts[0] if len(parts) == 1 else np.array(["|".join(t) for t in zip(*parts, strict=True)])
    )
    return pd.Categorical(joined)


def _params(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name[0] != "_"}


# ---- synthetic ---------------------------------------------------------------------------------
@dataclass
class SyntheticConfig(DatasetConfig):
    """Counts from a random decoder: z → softmax(W z + b + batch offset) → ZINB."""

    ROLE: ClassVar[str] = "cells"
    SIZE_KEY: ClassVar[str | None] = "n_cells"

    n_cells: int = field(default=2000, metadata=rng(ge=4))
    n_genes: int = field(default=500, metadata=rng(ge=2))
    n_latent: int = field(default=5, metadata=rng(ge=1))  # true latent dimension
    n_types: int = field(default=5, metadata=rng(ge=1))  # clusters of z (cell types)
    type_spread: float = field(default=2.0, metadata=rng(ge=0))  # sd of the cluster centres
    n_batches: int = field(default=2, metadata=rng(ge=1))
    batch_effect: float = field(default=0.5, metadata=rng(ge=0))  # sd of per-batch gene offsets
    weight_sd: float = field(default=0.5, metadata=rng(gt=0))  # sd of the decoder weights W
    library_mean: float = field(default=1500.0, metadata=rng(gt=0))  # median UMIs per cell
    library_sd: float = field(default=0.3, metadata=rng(ge=0))  # sd of log library size
    theta: float = field(default=5.0, metadata=rng(gt=0))  # median inverse dispersion
    zero_inflation: float = field(default=0.1, metadata=rng(ge=0, lt=1))
    seed: int = 2025


@dataclass
class Recipe:
    """The per-cell and per-gene draws of the synthetic recipe (small: no counts)."""

    types: np.ndarray  # (n,)
    z: np.ndarray  # (n, d) ground-truth latent
    w: np.ndarray  # (d, g)
    b: np.ndarray  # (g,)
    theta: np.ndarray  # (g,)
    offsets: np.ndarray  # (n_batches, g)
    batch: np.ndarray  # (n,)
    library: np.ndarray  # (n,)
    counts_rng: np.random.Generator


def recipe(cfg: SyntheticConfig) -> Recipe:
    n, g, d = cfg.n_cells, cfg.n_genes, cfg.n_latent
    s_type, s_z, s_dec, s_batch, s_lib, s_count = np.random.default_rng(cfg.seed).spawn(6)
    centres = s_type.normal(0.0, cfg.type_spread, size=(cfg.n_types, d))
    types = s_type.integers(0, cfg.n_types, size=n)
    z = centres[types] + s_z.normal(size=(n, d))
    w = s_dec.normal(0.0, cfg.weight_sd, size=(d, g))
    b = s_dec.normal(0.0, 1.0, size=g)
    theta = cfg.theta * np.exp(s_dec.normal(0.0, 0.3, size=g))
    offsets = s_batch.normal(0.0, cfg.batch_effect, size=(cfg.n_batches, g))
    batch = s_batch.integers(0, cfg.n_batches, size=n)
    library = np.exp(s_lib.normal(np.log(cfg.library_mean), cfg.library_sd, size=n))
    return Recipe(types, z, w, b, theta, offsets, batch, library, s_count)


def count_blocks(cfg: SyntheticConfig, r: Recipe) -> Iterator[sp.csr_matrix]:
    """The counts, ``_BLOCK`` cells at a time (CSR float32; memory bounded by one block)."""
    for start in range(0, cfg.n_cells, _BLOCK):
        stop = min(start + _BLOCK, cfg.n_cells)
        logits = r.z[start:stop] @ r.w + r.b + r.offsets[r.batch[start:stop]]
        logits -= logits.max(axis=1, keepdims=True)
        rho = np.exp(logits)
        rho /= rho.sum(axis=1, keepdims=True)
        mu = rho * r.library[start:stop, None]
        lam = r.counts_rng.gamma(r.theta, mu / r.theta)
        x = r.counts_rng.poisson(lam).astype(np.float32)
        if cfg.zero_inflation > 0:
            x[r.counts_rng.random(x.shape) < cfg.zero_inflation] = 0
        yield sp.csr_matrix(x)


def census_obs(r: Recipe) -> pd.DataFrame:
    """Census-style obs: one donor per batch of a (dataset_id, assay, suspension_type)."""
    assays = ["10x 3' v3", "10x 5' v2", "10x 3' v2"]
    levels = np.arange(r.offsets.shape[0])

    def column(per_level: list[str]) -> pd.Categorical:  # categorical: ~1 byte a cell
        return pd.Categorical(np.asarray(per_level, dtype=object)[r.batch])

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in r.types]),
            "dataset_id": column([f"dataset{bb // 2}" for bb in levels]),
            "assay": column([assays[bb % len(assays)] for bb in levels]),
            "suspension_type": column(["nucleus" if bb % 3 == 2 else "cell" for bb in levels]),
            "donor_id": column([f"donor{bb}" for bb in levels]),
        },
        index=[f"cell{i:06d}" for i in range(r.batch.shape[0])],
    )
    obs[BATCH] = batch_from_keys(obs, CENSUS_KEYS, "dataset")
    return obs


def synthetic(cfg: SyntheticConfig) -> dict[str, AnnData]:
    """Seeded synthetic counts with a ground-truth latent and batch effects (CSR float32).

    z ~ N(c_type, I) with centres c ~ N(0, type_spread²); ρ = softmax(W z + b + o_batch),
    W ~ N(0, weight_sd²), b ~ N(0, 1), o ~ N(0, batch_effect²); library ~ LogNormal(log
    library_mean, library_sd²); θ_g = theta·exp(N(0, 0.3²)); x ~ Poisson(Gamma(θ, μ/θ)) with
    entries zeroed at rate ``zero_inflation``. Independent child streams of the seed drive each
    part. Each batch b is one donor of a census-style (dataset_id, assay, suspension_type).
    """
    import anndata

    r = recipe(cfg)
    counts = sp.vstack(list(count_blocks(cfg, r)), format="csr")
    var = pd.DataFrame({"true_theta": r.theta}, index=[f"gene{j:05d}" for j in range(cfg.n_genes)])
    adata = anndata.AnnData(X=counts, obs=census_obs(r), var=var)
    adata.obsm["true_latent"] = r.z
    adata.uns["generator"] = {"loader": "synthetic", **_params(cfg)}
    return {ROLE: adata}


# ---- pbmc68k -----------------------------------------------------------------------------------
@dataclass
class PBMCConfig(DatasetConfig):
    """Scanpy's shipped PBMC 68k subset (700 cells × 765 genes) with integer counts."""

    ROLE: ClassVar[str] = "cells"

    batch_keys: list[str] = field(default_factory=list)  # obs columns forming the batch
    label_key: str = "bulk_labels"  # cell types, for quality metrics


def pbmc68k(cfg: PBMCConfig) -> dict[str, AnnData]:
    """PBMC counts (``harness.data.pbmc68k_counts``) with obs["batch"] and obs["cell_type"]."""
    adata = pbmc68k_counts()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.obs[BATCH] = batch_from_keys(adata.obs, cfg.batch_keys, "dataset.batch_keys")
    if cfg.label_key not in adata.obs:
        raise UserError(f"dataset.label_key={cfg.label_key!r}: not an obs column of the PBMC data")
    adata.obs["cell_type"] = adata.obs[cfg.label_key].astype("category")
    return {ROLE: adata}


# ---- user files --------------------------------------------------------------------------------
@dataclass
class H5adConfig(DatasetConfig):
    """The user's h5ad file of raw counts."""

    ROLE: ClassVar[str] = "cells"

    path: str = MISSING
    layer: str | None = None  # layer holding the raw counts (null: X)
    batch_keys: list[str] = field(default_factory=list)  # obs columns concatenated into the batch
    label_key: str | None = None  # optional cell-type column, for quality metrics
    backed: bool = False  # open backed (X stays on disk; method.staging=stream reads chunks)


def user_h5ad(cfg: H5adConfig) -> dict[str, AnnData]:
    """Load the file (backed when asked), check the counts, derive obs["batch"]."""
    import anndata

    if cfg.path is None or cfg.path == MISSING or not str(cfg.path).strip():
        raise UserError("dataset.path: required (path to an h5ad file of raw counts)")
    path = resolve_user_path(cfg.path)
    if cfg.backed:
        try:
            adata = anndata.read_h5ad(path, backed="r")
        except FileNotFoundError:
            raise UserError(f"dataset.path: file not found: {path}") from None
        except Exception as exc:
            raise UserError(
                f"dataset.path: {path} is not an h5ad file or cannot be read ({type(exc).__name__})"
            ) from None
        if cfg.layer is not None:
            raise UserError("dataset.layer: backed mode streams X; store the counts in X")
    else:
        adata = read_h5ad(path, "dataset.path")
        counts = counts_matrix(adata, cfg.layer, f"dataset.path {path}")
        if cfg.layer is not None:
            adata.X = counts
    adata.obs[BATCH] = batch_from_keys(adata.obs, list(cfg.batch_keys), "dataset.batch_keys")
    if cfg.label_key is not None:
        if cfg.label_key not in adata.obs:
            raise UserError(f"dataset.label_key={cfg.label_key!r}: not an obs column of {path}")
        adata.obs["cell_type"] = adata.obs[cfg.label_key].astype("category")
    return {ROLE: adata}


# ---- filters (census recipe) -------------------------------------------------------------------
def select_genes(x: sp.csr_matrix, n_top_genes: int | None, flavor: str) -> np.ndarray:
    """Indices of the top ``n_top_genes`` highly variable genes (scanpy), or all genes."""
    n_genes = x.shape[1]
    if n_top_genes is None or n_top_genes >= n_genes:
        return np.arange(n_genes)
    import anndata
    import scanpy as sc

    tmp = anndata.AnnData(X=x.astype(np.float32, copy=True))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor=flavor, subset=False)
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


def select_cells(x: sp.csr_matrix, min_counts: int, min_genes: int) -> np.ndarray:
    """Indices of cells with ≥ min_counts UMIs and ≥ min_genes detected genes."""
    umi = np.asarray(x.sum(axis=1)).ravel()
    genes = np.diff(x.indptr)
    return np.flatnonzero((umi >= min_counts) & (genes >= min_genes))
