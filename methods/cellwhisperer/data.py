"""CellWhisperer datasets (read-only surface): loaders returning ``{"cells": AnnData}`` with
raw counts in X, a caption per cell in ``obs["caption"]``, the labels the captions were built
from (``obs["cell_type"]`` and, for synthetic data, ``tissue`` and ``condition``), and a fixed
split in ``obs["split"]`` (train / val / test). Test cells are never trained on; their
captions use held-out wordings (templates and synonyms not seen in training), so zero-shot
scoring by prompt is a real generalisation test.

Loaders: :func:`synthetic`, :func:`pbmc68k` (captions from ``bulk_labels`` through the same
templates), :func:`user_file` (a caption column, or label columns + templates).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

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
TRAIN_TEMPLATES = (
    "A sample of {type} from a {condition} {tissue}",
    "{type} cells in {tissue} tissue, {condition} donor",
    "Transcriptome of {type} isolated from the {tissue} of a {condition} individual",
    "Single cell profile: {type}, {tissue}, {condition}",
)
TEST_TEMPLATES = (  # held-out wordings for zero-shot
    "A {condition} {tissue} sample containing {type}",
    "Expression profile of a {type} cell ({tissue}, {condition})",
)
PROMPT = "A sample of {type} from a healthy individual"  # the zero-shot prompt (upstream's)
CONDITIONS = {"healthy": ("healthy", "normal"), "inflamed": ("inflamed", "inflammatory")}
TISSUES = {"blood": ("blood", "peripheral blood"), "lung": ("lung", "pulmonary"),
           "liver": ("liver", "hepatic")}  # fmt: skip


def type_names(k: int) -> list[str]:
    greek = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    return [f"{greek[i % 10]}{'' if i < 10 else i // 10} cells" for i in range(k)]


def captions(
    gen: np.random.Generator, types: list[str], tissues: list[str], conditions: list[str],
    held_out: np.ndarray,
) -> list[str]:  # fmt: skip
    """One caption per cell from the templates and synonyms (test cells: held-out wordings)."""
    out = []
    for t, tis, cond, test in zip(types, tissues, conditions, held_out, strict=True):
        templates = TEST_TEMPLATES if test else TRAIN_TEMPLATES
        tpl = templates[gen.integers(len(templates))]
        tis_word = TISSUES.get(tis, (tis,))[gen.integers(len(TISSUES.get(tis, (tis,))))]
        cond_word = CONDITIONS.get(cond, (cond,))[gen.integers(len(CONDITIONS.get(cond, (cond,))))]
        out.append(tpl.format(type=t, tissue=tis_word, condition=cond_word))
    return out


def split_cells(gen: np.random.Generator, n: int, val: float, test: float) -> np.ndarray:
    order = gen.permutation(n)
    out = np.full(n, "train", dtype=object)
    n_test, n_val = round(test * n), round(val * n)
    out[order[:n_test]] = "test"
    out[order[n_test : n_test + n_val]] = "val"
    return out.astype(str)


def _finish(
    x: sp.csr_matrix, obs: pd.DataFrame, genes: list[str], meta: dict
) -> dict[str, AnnData]:
    import anndata

    obs.index = [f"cell{i:06d}" for i in range(x.shape[0])]
    adata = anndata.AnnData(X=sp.csr_matrix(x, dtype=np.float32), obs=obs,
                            var=pd.DataFrame(index=genes))  # fmt: skip
    adata.uns["generator"] = meta
    return {ROLE: adata}


@dataclass
class SyntheticConfig(DatasetConfig):
    """Cells of K types × tissues × conditions with distinct programmes, captioned."""

    ROLE: ClassVar[str] = "cells+captions"
    SIZE_KEY: ClassVar[str | None] = "n_cells"

    n_cells: int = field(default=3000, metadata=rng(ge=20))
    n_genes: int = field(default=300, metadata=rng(ge=20))
    n_types: int = field(default=6, metadata=rng(ge=2, le=30))
    programme_genes: int = field(default=25, metadata=rng(ge=1))
    programme_fold: float = field(default=6.0, metadata=rng(gt=1))
    library: float = field(default=2000.0, metadata=rng(gt=0))
    val_fraction: float = field(default=0.1, metadata=rng(ge=0, lt=0.5))
    test_fraction: float = field(default=0.2, metadata=rng(gt=0, lt=0.5))
    seed: int = 2025


def synthetic(cfg: SyntheticConfig) -> dict[str, AnnData]:
    gen = np.random.default_rng(cfg.seed)
    names = type_names(cfg.n_types)
    tissue_names, cond_names = list(TISSUES), list(CONDITIONS)
    n_prog = cfg.n_types + len(tissue_names) + len(cond_names)
    base = gen.gamma(0.8, size=cfg.n_genes)
    fold = np.ones((n_prog, cfg.n_genes))
    for p in range(n_prog):
        genes = gen.choice(cfg.n_genes, cfg.programme_genes, replace=False)
        fold[p, genes] = cfg.programme_fold if p < cfg.n_types else cfg.programme_fold / 2
    t = gen.integers(cfg.n_types, size=cfg.n_cells)
    tis = gen.integers(len(tissue_names), size=cfg.n_cells)
    cond = gen.integers(len(cond_names), size=cfg.n_cells)
    prof = base * fold[t] * fold[cfg.n_types + tis] * fold[cfg.n_types + len(tissue_names) + cond]
    prof /= prof.sum(axis=1, keepdims=True)
    size = np.exp(gen.normal(np.log(cfg.library), 0.3, cfg.n_cells))
    x = gen.poisson(gen.gamma(5.0, size[:, None] * prof / 5.0))
    split = split_cells(gen, cfg.n_cells, cfg.val_fraction, cfg.test_fraction)
    types = [names[i] for i in t]
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(types, categories=names),
        "tissue": pd.Categorical([tissue_names[i] for i in tis]),
        "condition": pd.Categorical([cond_names[i] for i in cond]),
        "split": pd.Categorical(split, categories=["train", "val", "test"]),
    })  # fmt: skip
    obs["caption"] = captions(
        gen, types, list(obs["tissue"]), list(obs["condition"]), split == "test"
    )
    meta = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name[0] != "_"}
    return _finish(sp.csr_matrix(x), obs, [f"gene_{g:04d}" for g in range(cfg.n_genes)], meta)


@dataclass
class PBMCConfig(DatasetConfig):
    """Scanpy's 700 PBMCs, captions from bulk_labels via the templates, a fixed split."""

    ROLE: ClassVar[str] = "cells+captions"

    min_class_cells: int = field(default=10, metadata=rng(ge=2))
    val_fraction: float = field(default=0.1, metadata=rng(ge=0, lt=0.5))
    test_fraction: float = field(default=0.25, metadata=rng(gt=0, lt=0.5))
    seed: int = 2025


def pbmc68k(cfg: PBMCConfig) -> dict[str, AnnData]:
    cells = pbmc68k_counts()
    labels = cells.obs["bulk_labels"].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    keep = ~np.isin(labels, counts[counts < cfg.min_class_cells].index)
    labels = labels[keep]
    gen = np.random.default_rng(cfg.seed)
    split = split_cells(gen, labels.size, cfg.val_fraction, cfg.test_fraction)
    n = labels.size
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(labels),
        "tissue": pd.Categorical(["blood"] * n),
        "condition": pd.Categorical(["healthy"] * n),
        "split": pd.Categorical(split, categories=["train", "val", "test"]),
    })  # fmt: skip
    obs["caption"] = captions(gen, list(labels), ["blood"] * n, ["healthy"] * n, split == "test")
    return _finish(sp.csr_matrix(cells.X)[keep], obs, list(cells.var_names), {"source": "pbmc68k"})


@dataclass
class FileConfig(DatasetConfig):
    """Your h5ad: raw counts and a caption column, or label columns + the templates."""

    ROLE: ClassVar[str] = "cells+captions"

    path: str = MISSING
    caption_key: str | None = "caption"  # null: build captions from the label columns
    cell_type_key: str = "cell_type"
    tissue_key: str | None = None
    condition_key: str | None = None
    layer: str | None = None
    val_fraction: float = field(default=0.1, metadata=rng(ge=0, lt=0.5))
    test_fraction: float = field(default=0.2, metadata=rng(gt=0, lt=0.5))
    seed: int = 2025


def user_file(cfg: FileConfig) -> dict[str, AnnData]:
    path = resolve_user_path(cfg.path)
    adata = read_h5ad(path, "dataset.path")
    x = sp.csr_matrix(counts_matrix(adata, cfg.layer, f"dataset.path {path}"))
    for key in filter(None, (cfg.cell_type_key, cfg.tissue_key, cfg.condition_key)):
        if key not in adata.obs:
            raise UserError(f"dataset: {path} has no obs column {key!r}")
    gen = np.random.default_rng(cfg.seed)
    n = adata.n_obs
    split = split_cells(gen, n, cfg.val_fraction, cfg.test_fraction)
    types = adata.obs[cfg.cell_type_key].astype(str).to_numpy()
    tissue = (
        adata.obs[cfg.tissue_key].astype(str).to_numpy() if cfg.tissue_key else np.full(n, "tissue")
    )
    cond = (
        adata.obs[cfg.condition_key].astype(str).to_numpy()
        if cfg.condition_key
        else np.full(n, "healthy")
    )
    obs = pd.DataFrame({"cell_type": pd.Categorical(types), "tissue": pd.Categorical(tissue),
                        "condition": pd.Categorical(cond),
                        "split": pd.Categorical(split, categories=["train", "val", "test"])})  # fmt: skip
    if cfg.caption_key:
        if cfg.caption_key not in adata.obs:
            raise UserError(f"dataset.caption_key: {path} has no obs column {cfg.caption_key!r}; "
                            "set dataset.caption_key=null to build captions from the labels")  # fmt: skip
        obs["caption"] = adata.obs[cfg.caption_key].astype(str).to_numpy()
    else:
        obs["caption"] = captions(gen, list(types), list(tissue), list(cond), split == "test")
    return _finish(x, obs, list(adata.var_names), {"path": path})
