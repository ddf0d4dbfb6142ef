"""CellBender datasets (read-only surface): loaders returning ``{"droplets": AnnData}``.

Contract: X holds the raw, unfiltered droplet × gene counts (CSR, integers), empty droplets
included. With ground truth (synthetic, contaminated PBMC): ``obs["cell"]`` (bool),
``obs["cell_type"]``, ``layers["counts_true"]`` (the cell's own counts) and
``layers["counts_bkg"]`` (ambient + swapped counts), ``uns["chi_ambient"]`` (the true ambient
profile), ``uns["truth"]`` (rho, phi, cell and empty sizes).

Loaders: :func:`synthetic` (the full model's story, seeded), :func:`pbmc68k` (scanpy's shipped
PBMCs as cells, contaminated with ambient drawn from their pooled profile, plus empties) and
:func:`user_file` (an h5ad or a CellRanger ``raw_feature_bc_matrix.h5``).
"""

from __future__ import annotations

import dataclasses
import os
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

ROLE = "droplets"


def _params(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name[0] != "_"}


def _profiles(gen: np.random.Generator, n_types: int, n_genes: int, de: float) -> np.ndarray:
    """(n_types, n_genes) expression profiles: a shared base and type-specific genes."""
    base = gen.gamma(0.6, size=n_genes)
    prof = np.empty((n_types, n_genes))
    for t in range(n_types):
        up = gen.random(n_genes) < 0.15
        fold = np.where(up, np.exp(gen.normal(0.0, de, n_genes)), 1.0)
        prof[t] = base * fold
    return prof / prof.sum(axis=1, keepdims=True)


def contaminate(
    gen: np.random.Generator,
    signal: sp.csr_matrix,
    chi_ambient: np.ndarray,
    n_empty: int,
    empty_umi: float,
    empty_sd: float,
    rho: float,
    eps: np.ndarray,
) -> dict[str, Any]:
    """Add the full model's background to the cells' own counts and draw empty droplets.

    Droplet n (cells first, then ``n_empty`` empties) has efficiency ε_n (given), an empty size
    d_empty ~ LogNormal(log empty_umi, empty_sd) and background rate
    λ = ε·[(1 − ρ)·χ_ambient·d_empty + ρ·χ_bar·(y·d_cell + d_empty)], with χ_bar the average
    expression over the cells and d_cell the cell's own total; background ~ Poisson(λ)."""
    n_cells, n_genes = signal.shape
    d_cell = np.asarray(signal.sum(axis=1)).ravel().astype(np.float64)
    chi_bar = np.asarray(signal.sum(axis=0)).ravel() / max(d_cell.sum(), 1.0)
    n = n_cells + n_empty
    d_empty = np.exp(gen.normal(np.log(empty_umi), empty_sd, size=n))
    y = np.r_[np.ones(n_cells), np.zeros(n_empty)]
    d_all = np.r_[d_cell, np.zeros(n_empty)]
    lam = (eps * (1 - rho) * d_empty)[:, None] * chi_ambient[None, :]
    lam += (eps * rho * (y * d_all + d_empty))[:, None] * chi_bar[None, :]
    bkg = sp.csr_matrix(gen.poisson(lam), dtype=np.int64)
    full = sp.vstack([signal, sp.csr_matrix((n_empty, n_genes), dtype=np.int64)]).tocsr()
    return {
        "x": (full + bkg).tocsr(),
        "signal": full,
        "bkg": bkg,
        "eps": eps,
        "d_empty": d_empty,
        "d_cell": d_all,
        "chi_bar": chi_bar,
    }


def _assemble(
    gen: np.random.Generator,
    parts: dict[str, Any],
    labels: list[str],
    genes: list[str],
    chi_ambient: np.ndarray,
    truth: dict[str, Any],
    source: dict[str, Any],
) -> dict[str, AnnData]:
    import anndata

    n = parts["x"].shape[0]
    order = gen.permutation(n)  # barcodes in no particular order, as in a raw matrix
    obs = pd.DataFrame(
        {
            "cell": np.array([lab != "empty" for lab in labels])[order],
            "cell_type": pd.Categorical(np.asarray(labels)[order]),
            "epsilon": parts["eps"][order],
            "d_empty": parts["d_empty"][order],
            "d_cell": parts["d_cell"][order],
        },
        index=[f"BC{i:07d}" for i in range(n)],
    )
    adata = anndata.AnnData(
        X=sp.csr_matrix(parts["x"][order], dtype=np.float32),
        obs=obs,
        var=pd.DataFrame(index=genes),
    )
    adata.layers["counts_true"] = sp.csr_matrix(parts["signal"][order], dtype=np.float32)
    adata.layers["counts_bkg"] = sp.csr_matrix(parts["bkg"][order], dtype=np.float32)
    adata.uns["chi_ambient"] = np.asarray(chi_ambient, dtype=np.float64)
    adata.uns["chi_bar"] = np.asarray(parts["chi_bar"], dtype=np.float64)
    adata.uns["truth"] = truth
    adata.uns["generator"] = source
    return {ROLE: adata}


# ---- synthetic ---------------------------------------------------------------------------------
@dataclass
class SyntheticConfig(DatasetConfig):
    """The full model's story: K cell types, empties, ambient χ, swapping ρ, efficiency ε."""

    ROLE: ClassVar[str] = ROLE
    SIZE_KEY: ClassVar[str | None] = "n_droplets"

    n_genes: int = field(default=600, metadata=rng(ge=10))
    n_types: int = field(default=3, metadata=rng(ge=1))
    cells_per_type: int = field(default=300, metadata=rng(ge=1))
    n_droplets: int = field(default=5000, metadata=rng(ge=10))  # cells + empties
    cell_umi: float = field(default=3000.0, metadata=rng(gt=0))  # median cell size
    cell_sd: float = field(default=0.3, metadata=rng(ge=0))  # sd of log cell size
    empty_umi: float = field(default=150.0, metadata=rng(gt=0))  # median empty size
    empty_sd: float = field(default=0.3, metadata=rng(ge=0))
    rho: float = field(default=0.03, metadata=rng(ge=0, lt=1))  # swapping fraction
    phi: float = field(default=0.1, metadata=rng(ge=0))  # NB overdispersion of cell counts
    epsilon_conc: float = field(default=50.0, metadata=rng(gt=0))  # ε ~ Gamma(c, c)
    type_fold: float = field(default=1.5, metadata=rng(ge=0))  # sd of log type-specific folds
    seed: int = 2025


def synthetic(cfg: SyntheticConfig) -> dict[str, AnnData]:
    """Seeded droplets from the full model (truth kept; see the module doc)."""
    n_cells = cfg.n_types * cfg.cells_per_type
    if n_cells >= cfg.n_droplets:
        raise UserError(
            f"dataset.n_droplets={cfg.n_droplets}: must exceed the {n_cells} cells "
            "(n_types × cells_per_type): a raw matrix holds empty droplets too"
        )
    gen = np.random.default_rng(cfg.seed)
    prof = _profiles(gen, cfg.n_types, cfg.n_genes, cfg.type_fold)
    types = np.repeat(np.arange(cfg.n_types), cfg.cells_per_type)
    eps = gen.gamma(cfg.epsilon_conc, 1.0 / cfg.epsilon_conc, size=cfg.n_droplets)
    size = np.exp(gen.normal(np.log(cfg.cell_umi), cfg.cell_sd, n_cells))
    mu = ((1 - cfg.rho) * eps[:n_cells] * size)[:, None] * prof[types]
    if cfg.phi > 0:
        mu = gen.gamma(1.0 / cfg.phi, mu * cfg.phi)
    signal = sp.csr_matrix(gen.poisson(mu), dtype=np.int64)
    weights = np.bincount(types, minlength=cfg.n_types) / n_cells
    chi_ambient = weights @ prof  # the ambient soup: lysed cells in proportion
    chi_ambient = chi_ambient / chi_ambient.sum()
    parts = contaminate(
        gen, signal, chi_ambient, cfg.n_droplets - n_cells, cfg.empty_umi, cfg.empty_sd,
        cfg.rho, eps,
    )  # fmt: skip
    labels = [f"type_{t}" for t in types] + ["empty"] * (cfg.n_droplets - n_cells)
    genes = [f"gene_{g:04d}" for g in range(cfg.n_genes)]
    truth = {"rho": cfg.rho, "phi": cfg.phi, "cell_umi": cfg.cell_umi, "empty_umi": cfg.empty_umi}
    return _assemble(gen, parts, labels, genes, chi_ambient, truth, _params(cfg))


# ---- PBMC 68k, contaminated ------------------------------------------------------------------
@dataclass
class PBMCConfig(DatasetConfig):
    """Scanpy's shipped PBMCs as cells, with ambient background and empties drawn around them."""

    ROLE: ClassVar[str] = ROLE

    n_empty: int = field(default=4000, metadata=rng(ge=10))
    empty_umi: float = field(default=100.0, metadata=rng(gt=0))
    empty_sd: float = field(default=0.3, metadata=rng(ge=0))
    rho: float = field(default=0.03, metadata=rng(ge=0, lt=1))
    epsilon_conc: float = field(default=50.0, metadata=rng(gt=0))
    seed: int = 2025


def pbmc68k(cfg: PBMCConfig) -> dict[str, AnnData]:
    """700 real PBMCs (counts recovered exactly) + contamination from their pooled profile."""
    cells = pbmc68k_counts()
    true_counts = sp.csr_matrix(cells.X, dtype=np.int64)
    pooled = np.asarray(true_counts.sum(axis=0)).ravel().astype(np.float64)
    chi_ambient = pooled / pooled.sum()
    gen = np.random.default_rng(cfg.seed)
    n = true_counts.shape[0] + cfg.n_empty
    eps = gen.gamma(cfg.epsilon_conc, 1.0 / cfg.epsilon_conc, size=n)
    parts = contaminate(
        gen, true_counts, chi_ambient, cfg.n_empty, cfg.empty_umi, cfg.empty_sd, cfg.rho, eps
    )
    labels = [str(x) for x in cells.obs["bulk_labels"]] + ["empty"] * cfg.n_empty
    truth = {"rho": cfg.rho, "empty_umi": cfg.empty_umi}
    return _assemble(gen, parts, labels, list(cells.var_names), chi_ambient, truth, _params(cfg))


# ---- user files ------------------------------------------------------------------------------
@dataclass
class FileConfig(DatasetConfig):
    """A raw droplet × gene matrix: an h5ad, or CellRanger's ``raw_feature_bc_matrix.h5``."""

    ROLE: ClassVar[str] = ROLE

    path: str = MISSING
    layer: str | None = None  # h5ad: the layer with raw counts (null: X)
    # a seeded random subset of the droplets (1.0: all), e.g. for the loop's fresh inputs
    subsample: float = field(default=1.0, metadata=rng(gt=0, le=1))
    subsample_seed: int = 0

    def draw(self, k: int) -> FileConfig:
        return dataclasses.replace(self, subsample=min(self.subsample, 0.9), subsample_seed=k)


def user_file(cfg: FileConfig) -> dict[str, AnnData]:
    """The user's raw matrix, checked: integer counts, genes unique, empties present."""
    path = resolve_user_path(cfg.path)
    if not os.path.exists(path):
        raise UserError(f"dataset.path: file not found: {path}")
    if path.endswith(".h5") and not path.endswith(".h5ad"):
        try:
            import scanpy as sc

            adata = sc.read_10x_h5(path)
        except Exception as exc:
            raise UserError(
                f"dataset.path: {path} is not a CellRanger h5 matrix ({type(exc).__name__})"
            ) from None
    else:
        adata = read_h5ad(path, "dataset.path")
    counts = counts_matrix(adata, cfg.layer, f"dataset.path {path}")
    adata.X = sp.csr_matrix(counts, dtype=np.float32)
    adata.var_names_make_unique()
    if cfg.subsample < 1.0:
        gen = np.random.default_rng(cfg.subsample_seed)
        keep = np.sort(gen.choice(adata.n_obs, int(cfg.subsample * adata.n_obs), replace=False))
        adata = adata[keep].copy()
    return {ROLE: adata}
