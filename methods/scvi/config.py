"""Config schema of the scVI method (read-only surface). Defaults are scvi-tools' defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.api import MethodConfig, rng


@dataclass
class SCVITolerance:
    """The ``close`` tier: a run within these bounds of the baseline counts as correct."""

    # |elbo - elbo_ref| / |elbo_ref| of the held-out ELBO
    elbo_rel: float = field(default=0.01, metadata=rng(ge=0))
    # mean fraction of shared k nearest neighbours between the two latent spaces
    knn_overlap: float = field(default=0.5, metadata=rng(ge=0, le=1))
    knn_k: int = field(default=15, metadata=rng(ge=1))


@dataclass
class SCVIConfig(MethodConfig):
    ROLE: ClassVar[str] = "cells"
    TIMING: ClassVar[str] = "train"
    # CUDA scatter-adds (atomics) and bf16/fp16 autocast make bytes vary between runs
    DETERMINISM: ClassVar[str] = "statistical"
    AUTOCAST: ClassVar[tuple[str, ...]] = ("bf16", "fp16")

    # ---- model (scvi-tools VAE defaults) ----
    n_hidden: int = field(default=128, metadata=rng(ge=1))
    n_latent: int = field(default=10, metadata=rng(ge=1))
    n_layers: int = field(default=1, metadata=rng(ge=1))
    dropout_rate: float = field(default=0.1, metadata=rng(ge=0, lt=1))
    dispersion: str = field(default="gene", metadata=rng(choices=["gene", "gene-batch"]))
    gene_likelihood: str = field(default="zinb", metadata=rng(choices=["zinb", "nb"]))
    log_variational: bool = True
    use_observed_lib_size: bool = True
    # batch one-hot into the encoder too (it always goes into the decoder)
    encode_covariates: bool = False
    # batch one-hot into every hidden layer, not only the first
    deeply_inject_covariates: bool = True
    # obs columns concatenated into the batch; null: the dataset's obs["batch"]
    batch_keys: list[str] | None = None
    # ---- training (scvi-tools TrainingPlan / train() defaults) ----
    # null: scvi-tools' heuristic min(round(20000 / n_cells * 400), 400)
    max_epochs: int | None = field(default=None, metadata=rng(ge=1))
    # stop after this many optimizer steps (null: no step budget)
    max_steps: int | None = field(default=None, metadata=rng(ge=1))
    batch_size: int = field(default=128, metadata=rng(ge=2))
    train_size: float = field(default=0.9, metadata=rng(gt=0, le=1))
    lr: float = field(default=1e-3, metadata=rng(gt=0))
    adam_eps: float = field(default=0.01, metadata=rng(gt=0))
    weight_decay: float = field(default=1e-6, metadata=rng(ge=0))
    # KL warm-up of the latent KL: by steps when n_steps_kl_warmup is set, else by epochs
    n_epochs_kl_warmup: int | None = field(default=400, metadata=rng(ge=1))
    n_steps_kl_warmup: int | None = field(default=None, metadata=rng(ge=1))
    max_kl_weight: float = field(default=1.0, metadata=rng(ge=0))
    min_kl_weight: float = field(default=0.0, metadata=rng(ge=0))
    seed: int = 0
    # ---- data path ----
    # auto: dense on the device if it fits in device_fraction of free memory, else CSR, else
    # streamed from the host / a backed h5ad in chunks
    staging: str = field(
        default="auto", metadata=rng(choices=["auto", "dense", "csr", "stream"], task=False)
    )
    device_fraction: float = field(default=0.5, metadata=rng(gt=0, le=1, task=False))
    # stream: cells read at a time, loader worker processes
    chunk_cells: int = field(default=8192, metadata=rng(ge=1, task=False))
    workers: int = field(default=0, metadata=rng(ge=0, task=False))
    # ---- filters (census recipe: min_genes 300, n_top_genes 8000) ----
    min_counts: int = field(default=1, metadata=rng(ge=1))  # cells with fewer UMIs are dropped
    min_genes: int = field(default=0, metadata=rng(ge=0))
    n_top_genes: int | None = field(default=None, metadata=rng(ge=1))
    hvg_flavor: str = field(default="seurat", metadata=rng(choices=["seurat", "cell_ranger"]))
    # ---- evaluation: held-out cells, latent means hashed ----
    n_eval_cells: int = field(default=2000, metadata=rng(ge=1))
    tol: SCVITolerance = field(default_factory=SCVITolerance)
