"""RCTD datasets: loaders returning ``{"spatial": AnnData, "reference": AnnData}``.

Contract (see ``conf/dataset/*.yaml``):

- spatial: X raw counts (pixels × genes), var_names gene symbols; with known ground truth,
  ``obsm["true_weights"]`` (pixels × types, float64, rows sum to 1) in the type order of
  ``uns["cell_type_names"]``.
- reference: X raw counts, ``obs["cell_type"]`` categorical.

Loaders: :func:`synthetic` (generated from known profiles), :func:`pbmc68k` (mixtures of real
held-out cells from scanpy's shipped PBMC subset) and :func:`user_h5ad` (the user's files).
:func:`validate_rctd_inputs` is the method's input check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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

ROLES = ("spatial", "reference")
CELL_TYPE = "cell_type"
_ROW_BLOCK = 4096  # spatial pixels generated per block (bounds memory; part of the seeded recipe)


def _params(cfg: Any) -> dict[str, Any]:
    """The config's own keys (no ``_target_``/``_schema_``) for ``uns["generator"]``."""
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if not f.name.startswith("_") and getattr(cfg, f.name) is not None
    }


def _mixture(
    gen: np.random.Generator, n: int, k: int, max_types: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: 1..max_types distinct types of k with Dirichlet(alpha) proportions.

    Returns ``(types, props, valid)``, each (n, max_types): the chosen type indices, their
    proportions (0 in unused slots, rows sum to 1) and the mask of used slots.
    """
    n_mix = gen.integers(1, max_types + 1, size=n)
    types = np.argsort(gen.random((n, k)), axis=1)[:, :max_types]
    valid = np.arange(max_types)[None, :] < n_mix[:, None]
    g = np.where(valid, gen.gamma(alpha, size=(n, max_types)), 0.0)
    total = g.sum(axis=1, keepdims=True)
    degenerate = total[:, 0] <= 0  # all gamma draws underflowed (tiny alpha)
    g[degenerate, 0], total[degenerate] = 1.0, 1.0
    return types, g / total, valid


def _names(prefix: str, n: int, width: int) -> list[str]:
    width = max(width, len(str(n - 1)))
    return [f"{prefix}_{i:0{width}d}" for i in range(n)]


# --------------------------------------------------------------------------------------------
# Synthetic


@dataclass
class SyntheticConfig(DatasetConfig):
    """Synthetic spatial + reference data from known type profiles."""

    ROLE: ClassVar[str] = "spatial+reference"
    SIZE_KEY: ClassVar[str | None] = "n_pixels"

    n_pixels: int = field(default=2000, metadata=rng(ge=1))
    n_genes: int = field(default=1000, metadata=rng(ge=2))
    n_types: int = field(default=12, metadata=rng(ge=1))
    umi_min: int = field(default=200, metadata=rng(ge=1))
    umi_max: int = field(default=5000, metadata=rng(ge=2))
    ref_cells_per_type: int = field(default=50, metadata=rng(ge=25))
    # sparse: each pixel mixes 1..max_types_per_pixel distinct types (Dirichlet(alpha));
    # dirichlet: Dirichlet(alpha) over all types (the rctd-py benchmark recipe)
    mix: str = field(default="sparse", metadata=rng(choices=["sparse", "dirichlet"]))
    max_types_per_pixel: int = field(default=3, metadata=rng(ge=1))
    alpha: float = field(default=1.0, metadata=rng(gt=0))
    # per-gene platform factor exp(N(0, platform_sd^2)), spatial only (0: off)
    platform_sd: float = field(default=0.0, metadata=rng(ge=0))
    # per-entry log-normal factor exp(N(0, noise_sigma^2)) on the spatial mean (0: off)
    noise_sigma: float = field(default=0.0, metadata=rng(ge=0))
    # spatial X as CSR, built block by block (Visium-HD-scale inputs: never a dense pixels ×
    # genes matrix); the same counts as dense
    sparse: bool = False
    seed: int = 2025


def synthetic(cfg: SyntheticConfig) -> dict[str, AnnData]:
    """Generate a seeded synthetic RCTD dataset (spatial pixels with true weights + reference).

    Recipe: profiles P[g, k] ~ Exp(0.01) normalised per type; reference cells ~ Poisson(UMI·P_k),
    UMI ~ U[umi_min, umi_max); pixels y ~ Poisson(nUMI · (P w) · platform_g · noise_pg) with
    nUMI ~ U[umi_min, umi_max). Independent child streams of ``default_rng(seed)`` drive the
    profiles, weights, spatial counts, reference, platform factor and noise, so toggling an
    option does not change the other draws.
    """
    import anndata

    if cfg.umi_max <= cfg.umi_min:
        raise UserError(
            f"config dataset.umi_max={cfg.umi_max}: must be > dataset.umi_min={cfg.umi_min}"
        )
    if cfg.mix == "sparse" and cfg.max_types_per_pixel > cfg.n_types:
        raise UserError(
            f"config dataset.max_types_per_pixel={cfg.max_types_per_pixel}: must be <= "
            f"dataset.n_types={cfg.n_types}"
        )
    n, g, k = cfg.n_pixels, cfg.n_genes, cfg.n_types
    s_prof, s_w, s_sp, s_ref, s_plat, s_noise = np.random.default_rng(cfg.seed).spawn(6)

    profiles = s_prof.exponential(0.01, size=(g, k))
    profiles /= profiles.sum(axis=0, keepdims=True)
    type_names = _names("type", k, 2)
    gene_names = _names("gene", g, 4)

    if cfg.mix == "dirichlet":
        weights = s_w.dirichlet(np.full(k, cfg.alpha), size=n)
        n_true = np.full(n, k, dtype=np.int32)
    else:
        types, props, valid = _mixture(s_w, n, k, cfg.max_types_per_pixel, cfg.alpha)
        weights = np.zeros((n, k))
        np.put_along_axis(weights, types, props, axis=1)
        n_true = valid.sum(axis=1).astype(np.int32)
    numi = s_w.integers(cfg.umi_min, cfg.umi_max, size=n)
    platform = (
        np.exp(s_plat.normal(0.0, cfg.platform_sd, size=g)) if cfg.platform_sd > 0 else np.ones(g)
    )

    x = None if cfg.sparse else np.empty((n, g), dtype=np.float32)
    blocks = []
    scaled_profiles = (profiles * platform[:, None]).T  # (k, g)
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        lam = weights[start:stop] @ scaled_profiles
        lam *= numi[start:stop, None]
        if cfg.noise_sigma > 0:
            lam *= np.exp(s_noise.normal(0.0, cfg.noise_sigma, size=lam.shape))
        if x is None:
            blocks.append(sp.csr_matrix(s_sp.poisson(lam).astype(np.float32)))
        else:
            x[start:stop] = s_sp.poisson(lam)
        del lam
    if x is None:
        x = sp.vstack(blocks, format="csr")
        del blocks

    spatial = anndata.AnnData(
        X=x,
        obs=pd.DataFrame({"true_n_types": n_true, "target_umi": numi}, index=_names("pixel", n, 5)),
        var=pd.DataFrame({"platform_factor": platform}, index=gene_names),
    )
    spatial.obsm["true_weights"] = weights
    spatial.varm["true_profiles"] = profiles
    spatial.uns["cell_type_names"] = list(type_names)
    spatial.uns["generator"] = {"loader": "synthetic", **_params(cfg)}

    m = cfg.ref_cells_per_type
    ref_umi = s_ref.integers(cfg.umi_min, cfg.umi_max, size=k * m)
    ref_type = np.repeat(np.arange(k), m)
    ref_x = s_ref.poisson(ref_umi[:, None] * profiles.T[ref_type]).astype(np.float32)
    reference = anndata.AnnData(
        X=sp.csr_matrix(ref_x),
        obs=pd.DataFrame(
            {CELL_TYPE: pd.Categorical.from_codes(ref_type, categories=type_names)},
            index=_names("cell", k * m, 5),
        ),
        var=pd.DataFrame(index=gene_names),
    )
    reference.uns["generator"] = spatial.uns["generator"]
    return {"spatial": spatial, "reference": reference}


# --------------------------------------------------------------------------------------------
# PBMC 68k mixtures


@dataclass
class PBMCConfig(DatasetConfig):
    """Pixels mixing 1..max_cells_per_pixel held-out real PBMC cells of distinct types."""

    ROLE: ClassVar[str] = "spatial+reference"
    SIZE_KEY: ClassVar[str | None] = "n_pixels"

    n_pixels: int = field(default=500, metadata=rng(ge=1))
    # the reference takes max(cell_min, round(ref_fraction * n)) cells of a type with n cells
    ref_fraction: float = field(default=0.6, metadata=rng(gt=0, lt=1))
    cell_min: int = field(default=25, metadata=rng(ge=1))
    # types without at least cell_min reference + min_holdout held-out cells are dropped
    min_holdout: int = field(default=5, metadata=rng(ge=1))
    max_cells_per_pixel: int = field(default=3, metadata=rng(ge=1))
    alpha: float = field(default=1.0, metadata=rng(gt=0))
    label_key: str = "bulk_labels"
    seed: int = 2025


def pbmc68k(cfg: PBMCConfig) -> dict[str, AnnData]:
    """Reference = a seeded subset of each type's PBMC cells; pixels = thinned held-out cells.

    Each pixel picks 1..max_cells_per_pixel distinct types, one held-out cell of each, and UMI
    proportions p ~ Dirichlet(alpha). With T = min_i UMI_i / p_i, cell i's counts are thinned
    binomially with probability T·p_i / UMI_i, so it contributes an expected fraction p_i of the
    pixel's UMIs; ``obsm["true_weights"]`` holds p. X is CSR int32 for both roles.
    """
    import anndata

    cells = pbmc68k_counts()
    if cfg.label_key not in cells.obs:
        raise UserError(
            f"config dataset.label_key={cfg.label_key!r}: not an obs column of the PBMC data "
            f"(columns: {list(cells.obs.columns)})"
        )
    labels = cells.obs[cfg.label_key].astype("category")
    gen = np.random.default_rng(cfg.seed)
    s_split, s_mix, s_cell, s_thin = gen.spawn(4)

    kept: list[str] = []
    dropped: list[str] = []
    ref_idx: list[np.ndarray] = []
    hold_idx: list[np.ndarray] = []
    for name in labels.cat.categories:
        members = np.flatnonzero((labels == name).to_numpy())
        n_ref = max(cfg.cell_min, round(cfg.ref_fraction * members.size))
        if members.size - n_ref < cfg.min_holdout:
            dropped.append(str(name))
            continue
        perm = s_split.permutation(members)
        kept.append(str(name))
        ref_idx.append(np.sort(perm[:n_ref]))
        hold_idx.append(perm[n_ref:])
    k = len(kept)
    if k == 0:
        raise UserError(
            f"config dataset.cell_min={cfg.cell_min}, dataset.min_holdout={cfg.min_holdout}: "
            "no PBMC cell type has enough cells; lower them"
        )
    if cfg.max_cells_per_pixel > k:
        raise UserError(
            f"config dataset.max_cells_per_pixel={cfg.max_cells_per_pixel}: must be <= the "
            f"{k} usable cell types"
        )

    x = sp.csr_matrix(cells.X)
    umi = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    n, m = cfg.n_pixels, cfg.max_cells_per_pixel
    types, props, valid = _mixture(s_mix, n, k, m, cfg.alpha)

    sizes = np.array([h.size for h in hold_idx])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pool = np.concatenate(hold_idx)
    pick = (s_cell.random((n, m)) * sizes[types]).astype(np.int64)
    chosen = pool[offsets[types] + np.minimum(pick, sizes[types] - 1)]

    pix, slot = np.nonzero(valid)
    cell = chosen[pix, slot]
    p = props[pix, slot]
    ratio = np.full((n, m), np.inf)
    ratio[pix, slot] = umi[cell] / p
    total = ratio.min(axis=1)  # T per pixel
    keep_prob = np.minimum(total[pix] * p / umi[cell], 1.0)

    parts = x[cell]  # one row per (pixel, slot) used
    nnz_rows = np.repeat(np.arange(parts.shape[0]), np.diff(parts.indptr))
    parts.data = s_thin.binomial(parts.data.astype(np.int64), keep_prob[nnz_rows]).astype(np.int32)
    combine = sp.csr_matrix(
        (np.ones(pix.size, dtype=np.int32), (pix, np.arange(pix.size))), shape=(n, pix.size)
    )
    spatial_x = (combine @ parts).tocsr()
    spatial_x.eliminate_zeros()
    spatial_x = spatial_x.astype(np.int32)

    weights = np.zeros((n, k))
    np.put_along_axis(weights, types, props, axis=1)
    info = {
        "loader": "pbmc68k",
        **_params(cfg),
        "kept_types": kept,
        "dropped_types": dropped,
        "reference_cells": [int(r.size) for r in ref_idx],
        "holdout_cells": [int(h.size) for h in hold_idx],
    }
    spatial = anndata.AnnData(
        X=spatial_x,
        obs=pd.DataFrame(
            {"true_n_types": valid.sum(axis=1).astype(np.int32)}, index=_names("pixel", n, 4)
        ),
        var=pd.DataFrame(index=cells.var_names.copy()),
    )
    spatial.obsm["true_weights"] = weights
    spatial.uns["cell_type_names"] = list(kept)
    spatial.uns["generator"] = info

    rows = np.concatenate(ref_idx)
    reference = cells[rows].copy()
    reference.obs[CELL_TYPE] = pd.Categorical(
        reference.obs[cfg.label_key].astype(str), categories=kept
    )
    reference.X = sp.csr_matrix(reference.X, dtype=np.int32)
    reference.uns["generator"] = info
    return {"spatial": spatial, "reference": reference}


# --------------------------------------------------------------------------------------------
# User files


@dataclass
class H5adConfig(DatasetConfig):
    """The user's own spatial and reference h5ad files."""

    ROLE: ClassVar[str] = "spatial+reference"

    spatial: str = MISSING
    reference: str = MISSING
    cell_type_key: str = "cell_type"
    # layer holding raw counts in both files (None: X)
    layer: str | None = None


def user_h5ad(cfg: H5adConfig) -> dict[str, AnnData]:
    """Load the user's spatial and reference files, checked, with counts in X and obs["cell_type"]."""
    out: dict[str, AnnData] = {}
    paths: dict[str, str] = {}
    for role in ROLES:
        value = getattr(cfg, role)
        if value is None or value == MISSING or not str(value).strip():
            raise UserError(f"dataset.{role}: required (path to the {role} h5ad file)")
        path = resolve_user_path(value)
        adata = read_h5ad(path, f"dataset.{role}")
        if cfg.layer is not None and cfg.layer not in adata.layers:
            have = list(adata.layers.keys())
            raise UserError(
                f"dataset.layer: layer {cfg.layer!r} not in {path} (layers: {have or 'none'})"
            )
        counts = counts_matrix(adata, cfg.layer, f"dataset.{role} {path}")
        if cfg.layer is not None:
            adata.X = counts
        out[role], paths[role] = adata, path

    ref, path = out["reference"], paths["reference"]
    key = cfg.cell_type_key
    if key not in ref.obs.columns:
        raise UserError(
            f"dataset.cell_type_key: column {key!r} not in {path} obs "
            f"(columns: {list(ref.obs.columns)})"
        )
    labels = ref.obs[key]
    n_missing = int(labels.isna().sum())
    if n_missing:
        raise UserError(
            f"dataset.cell_type_key: column {key!r} in {path} has {n_missing} missing labels"
        )
    if isinstance(labels.dtype, pd.CategoricalDtype):
        cat = labels.cat.remove_unused_categories()
    else:
        cat = labels.astype(str).astype("category")
    ref.obs[CELL_TYPE] = cat.cat.rename_categories([str(c) for c in cat.cat.categories])
    return out


# --------------------------------------------------------------------------------------------
# The method's input check


def validate_rctd_inputs(data: Mapping[str, AnnData], cell_min: int) -> None:
    """Check RCTD inputs; raise a one-line UserError naming the culprit.

    Both roles present and non-empty, raw counts in X, unique gene names, genes shared between
    spatial and reference, an ``obs["cell_type"]`` column without missing labels and at least
    ``cell_min`` cells per type.
    """
    missing = [r for r in ROLES if r not in data]
    if missing:
        raise UserError(f"dataset: loader returned no {missing} AnnData (got {sorted(data)})")
    for role in ROLES:
        adata = data[role]
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise UserError(f"dataset.{role}: empty ({adata.n_obs} × {adata.n_vars})")
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()].unique()
            raise UserError(
                f"dataset.{role}: {dup.size} duplicated gene names in var_names "
                f"(e.g. {list(dup[:3])})"
            )
        counts_matrix(adata, None, f"dataset.{role}")
    sp_genes, ref_genes = data["spatial"].var_names, data["reference"].var_names
    if sp_genes.intersection(ref_genes).size == 0:
        raise UserError(
            f"dataset: spatial and reference share no genes (spatial e.g. {list(sp_genes[:3])}, "
            f"reference e.g. {list(ref_genes[:3])})"
        )
    obs = data["reference"].obs
    if CELL_TYPE not in obs.columns:
        raise UserError(
            f"dataset.reference: obs has no {CELL_TYPE!r} column (columns: {list(obs.columns)})"
        )
    labels = obs[CELL_TYPE]
    if labels.isna().any():
        raise UserError(
            f"dataset.reference: obs[{CELL_TYPE!r}] has {int(labels.isna().sum())} missing labels"
        )
    counts = labels.value_counts(sort=False)
    small = counts[counts < cell_min]
    if len(small):
        listed = ", ".join(f"{t!r} ({n})" for t, n in small.items())
        raise UserError(
            f"dataset.reference: cell types with fewer than method.cell_min={cell_min} "
            f"cells: {listed}"
        )
