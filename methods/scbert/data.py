"""scBERT datasets (read-only surface): loaders returning ``{"cells": AnnData}`` with raw
counts in X and the labels in ``obs["label"]`` (categorical), a fixed seeded split in
``obs["split"]`` (train / val / test) and, for uncertainty tests, test cells of a "novel" type
never seen in training (``obs["novel"]``).

Loaders: :func:`synthetic` (K types with gene programmes; one held-out novel type),
:func:`pbmc68k` (scanpy's shipped PBMCs, the 10 ``bulk_labels``; classes with fewer than
``min_class_cells`` cells are dropped, named in the log), :func:`user_file` (an h5ad with a
label column).
"""

from __future__ import annotations

import dataclasses
import sys
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
SPLITS = ("train", "val", "test")


def stratified_split(labels: np.ndarray, seed: int, val: float, test: float) -> np.ndarray:
    """Per class, seeded: ``test`` and ``val`` fractions (at least one cell each when the class
    has 3 or more), the rest train."""
    gen = np.random.default_rng(seed)
    out = np.empty(labels.size, dtype=object)
    for c in np.unique(labels):
        idx = gen.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(test * idx.size)) if idx.size >= 3 else 0
        n_val = max(1, round(val * idx.size)) if idx.size >= 3 else 0
        out[idx[:n_test]] = "test"
        out[idx[n_test : n_test + n_val]] = "val"
        out[idx[n_test + n_val :]] = "train"
    return out.astype(str)


def _finish(x: sp.csr_matrix, labels: np.ndarray, genes: list[str], split: np.ndarray,
            novel: np.ndarray, meta: dict[str, Any]) -> dict[str, AnnData]:  # fmt: skip
    import anndata

    obs = pd.DataFrame(
        {"label": pd.Categorical(labels), "split": pd.Categorical(split, categories=SPLITS),
         "novel": novel},
        index=[f"cell{i:06d}" for i in range(x.shape[0])],
    )  # fmt: skip
    adata = anndata.AnnData(X=sp.csr_matrix(x, dtype=np.float32), obs=obs,
                            var=pd.DataFrame(index=genes))  # fmt: skip
    adata.uns["generator"] = meta
    return {ROLE: adata}


# ---- synthetic ---------------------------------------------------------------------------------
@dataclass
class SyntheticConfig(DatasetConfig):
    """K cell types with gene programmes over G genes; one extra "novel" type in test only."""

    ROLE: ClassVar[str] = "cells+labels"
    SIZE_KEY: ClassVar[str | None] = "cells_per_type"

    n_genes: int = field(default=200, metadata=rng(ge=10))
    n_types: int = field(default=5, metadata=rng(ge=2))
    cells_per_type: int = field(default=240, metadata=rng(ge=10))
    novel_cells: int = field(default=60, metadata=rng(ge=0))  # test cells of a held-out type
    programme_genes: int = field(default=20, metadata=rng(ge=1))  # genes up in each type
    programme_fold: float = field(default=8.0, metadata=rng(gt=1))
    library: float = field(default=2000.0, metadata=rng(gt=0))
    val_fraction: float = field(default=0.1, metadata=rng(ge=0, lt=0.5))
    test_fraction: float = field(default=0.2, metadata=rng(gt=0, lt=0.5))
    seed: int = 2025


def synthetic(cfg: SyntheticConfig) -> dict[str, AnnData]:
    gen = np.random.default_rng(cfg.seed)
    k = cfg.n_types + (1 if cfg.novel_cells else 0)
    base = gen.gamma(0.8, size=cfg.n_genes)
    prof = np.tile(base, (k, 1))
    for t in range(k):
        genes = gen.choice(cfg.n_genes, cfg.programme_genes, replace=False)
        prof[t, genes] *= cfg.programme_fold
    prof /= prof.sum(axis=1, keepdims=True)
    types = np.repeat(np.arange(cfg.n_types), cfg.cells_per_type)
    if cfg.novel_cells:
        types = np.concatenate([types, np.full(cfg.novel_cells, cfg.n_types)])
    size = np.exp(gen.normal(np.log(cfg.library), 0.3, types.size))
    x = gen.poisson(gen.gamma(5.0, size[:, None] * prof[types] / 5.0))
    labels = np.array([f"type_{t}" for t in types])
    known = types < cfg.n_types
    split = np.full(types.size, "test", dtype=object)
    split[known] = stratified_split(labels[known], cfg.seed, cfg.val_fraction, cfg.test_fraction)
    meta = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name[0] != "_"}
    genes = [f"gene_{g:04d}" for g in range(cfg.n_genes)]
    return _finish(sp.csr_matrix(x), labels, genes, split.astype(str), ~known, meta)


# ---- PBMC 68k ----------------------------------------------------------------------------------
@dataclass
class PBMCConfig(DatasetConfig):
    """Scanpy's shipped 700 PBMCs, 765 genes, the 10 bulk_labels, a fixed stratified split."""

    ROLE: ClassVar[str] = "cells+labels"

    min_class_cells: int = field(default=10, metadata=rng(ge=3))
    val_fraction: float = field(default=0.1, metadata=rng(ge=0, lt=0.5))
    test_fraction: float = field(default=0.2, metadata=rng(gt=0, lt=0.5))
    seed: int = 2021  # upstream's StratifiedShuffleSplit seed


def pbmc68k(cfg: PBMCConfig) -> dict[str, AnnData]:
    cells = pbmc68k_counts()
    labels = cells.obs["bulk_labels"].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    small = counts[counts < cfg.min_class_cells]
    if len(small):
        print(f"dataset labelled/pbmc68k: dropping classes under min_class_cells="
              f"{cfg.min_class_cells}: {dict(small)}", file=sys.stderr)  # fmt: skip
    keep = ~np.isin(labels, small.index)
    split = stratified_split(labels[keep], cfg.seed, cfg.val_fraction, cfg.test_fraction)
    meta = {
        "source": "scanpy pbmc68k_reduced",
        "dropped": {str(k): int(v) for k, v in small.items()},
    }
    return _finish(sp.csr_matrix(cells.X)[keep], labels[keep], list(cells.var_names), split,
                   np.zeros(int(keep.sum()), dtype=bool), meta)  # fmt: skip


# ---- user files --------------------------------------------------------------------------------
@dataclass
class FileConfig(DatasetConfig):
    """Your h5ad: raw counts (X or ``layer``) and a label column."""

    ROLE: ClassVar[str] = "cells+labels"

    path: str = MISSING
    label_key: str = "cell_type"
    layer: str | None = None
    genes: list[str] | None = None  # reindex to this gene list (missing genes: error)
    val_fraction: float = field(default=0.1, metadata=rng(ge=0, lt=0.5))
    test_fraction: float = field(default=0.2, metadata=rng(gt=0, lt=0.5))
    seed: int = 2021


def user_file(cfg: FileConfig) -> dict[str, AnnData]:
    path = resolve_user_path(cfg.path)
    adata = read_h5ad(path, "dataset.path")
    if cfg.label_key not in adata.obs:
        raise UserError(
            f"dataset.label_key: {path} has no obs column {cfg.label_key!r} "
            f"(columns: {list(adata.obs.columns)[:8]})"
        )
    x = sp.csr_matrix(counts_matrix(adata, cfg.layer, f"dataset.path {path}"))
    genes = list(adata.var_names)
    if cfg.genes:
        missing = [g for g in cfg.genes if g not in adata.var_names]
        if missing:
            raise UserError(
                f"dataset.genes: {len(missing)} genes missing from {path}, e.g. {missing[:3]}"
            )
        x = x[:, adata.var_names.get_indexer(cfg.genes)]
        genes = list(cfg.genes)
    labels = adata.obs[cfg.label_key].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    if (counts < 2).any():
        raise UserError(
            f"dataset.label_key: classes with fewer than 2 cells: {dict(counts[counts < 2])}"
        )
    split = stratified_split(labels, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    return _finish(x, labels, genes, split, np.zeros(labels.size, dtype=bool), {"path": path})
