"""The template's dataset (read-only surface): seeded counts from a low-rank model, one AnnData
per data key of its role (``KEYS``; for ``cells``: ``{"cells": AnnData}``) — raw counts in X,
one batch in ``obs["batch"]`` and the true latent in ``obsm["true_latent"]``.

The loader is the dataset YAML's ``_target_``, called with the validated ``_schema_`` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.sparse as sp

from harness.api import DatasetConfig, rng

if TYPE_CHECKING:
    from anndata import AnnData

# the data keys of the role (harness.config.schema.ROLE_KEYS); the method reads the first
KEYS: tuple[str, ...] = ("cells",)
KEY = KEYS[0]


@dataclass
class TemplateData(DatasetConfig):
    """``z ~ N(0, I)`` per cell → ``softmax(z W + b)`` · library → Poisson counts.

    ``seed`` lets the loop draw fresh inputs (``draw``); ``SIZE_KEY`` halves the held-out check
    input's cells."""

    ROLE: ClassVar[str] = "cells"
    SIZE_KEY: ClassVar[str | None] = "n_cells"

    n_cells: int = field(default=1000, metadata=rng(ge=8))
    n_genes: int = field(default=200, metadata=rng(ge=2))
    n_latent: int = field(default=4, metadata=rng(ge=1))
    library: float = field(default=2000.0, metadata=rng(gt=0))  # median UMIs per cell
    seed: int = 2025


def synthetic(cfg: TemplateData) -> dict[str, AnnData]:
    """The seeded data set of ``cfg``."""
    gen = np.random.default_rng(cfg.seed)
    return {key: _counts(cfg, gen) for key in KEYS}


def _counts(cfg: TemplateData, gen: np.random.Generator) -> AnnData:
    import anndata
    import pandas as pd

    z = gen.normal(size=(cfg.n_cells, cfg.n_latent))
    w = gen.normal(scale=0.7, size=(cfg.n_latent, cfg.n_genes))
    logits = z @ w + gen.normal(size=cfg.n_genes)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    library = cfg.library * gen.lognormal(0.0, 0.3, size=(cfg.n_cells, 1))
    counts = gen.poisson(p * library).astype(np.float32)
    adata = anndata.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(  # one batch: what every ``cells`` dataset holds (obs["batch"])
            {"batch": pd.Categorical(["0"] * cfg.n_cells)},
            index=[f"cell{i:05d}" for i in range(cfg.n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene{g:04d}" for g in range(cfg.n_genes)]),
    )
    adata.obsm["true_latent"] = z
    return adata
