"""Config schema of scBERT with a Bayesian head and structured pruning (read-only surface).
The defaults are a small configuration for a ~1 minute CPU run; ``method/preset=scbert_upstream``
restores upstream's sizes (dim 200, depth 6, heads 10; 16,906 genes is the data's business)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.api import MethodConfig, rng


@dataclass
class ScBERTTolerance:
    """The ``close`` tier against a baseline (after equal work counters). Calibration:
    ``python benchmarks/calibrate_tolerances.py scbert``."""

    prediction_agreement: float = field(default=0.99, metadata=rng(ge=0, le=1))
    # max |Δlogit| / max |logit_ref| on the fixed evaluation set
    logits_rel: float = field(default=0.05, metadata=rng(ge=0))
    # relative L2 distance of every head tensor
    head_rel: float = field(default=0.05, metadata=rng(ge=0))


@dataclass
class ScBERTConfig(MethodConfig):
    ROLE: ClassVar[str] = "cells+labels"
    TIMING: ClassVar[str] = "train"
    # the Bayesian head is sampled; bf16 runs differ bytewise
    DETERMINISM: ClassVar[str] = "statistical"
    AUTOCAST: ClassVar[tuple[str, ...]] = ("bf16",)

    bin_num: int = field(default=5, metadata=rng(ge=1))
    # ---- model ----
    dim: int = field(default=48, metadata=rng(ge=4))
    depth: int = field(default=2, metadata=rng(ge=1))
    heads: int = field(default=2, metadata=rng(ge=1))
    dim_head: int = field(default=64, metadata=rng(ge=4))
    nb_features: int = field(default=64, metadata=rng(ge=4))  # upstream: 266 = 64 ln 64
    hidden1: int = field(default=512, metadata=rng(ge=2))
    hidden2: int = field(default=128, metadata=rng(ge=2))
    gene_embedding: str | None = None  # a local .npy (G × dim); null: seeded fixed random
    train_gene_embedding: bool = False
    # ---- training ----
    epochs_a: int = field(default=6, metadata=rng(ge=1))
    epochs_b: int = field(default=4, metadata=rng(ge=0))
    batch_size: int = field(default=32, metadata=rng(ge=2))
    lr: float = field(default=1e-3, metadata=rng(gt=0))
    kl_weight: float = field(default=1e-5, metadata=rng(ge=0))
    kl_warmup_epochs: int = field(default=1, metadata=rng(ge=0))
    prune_step: float = field(default=0.1, metadata=rng(ge=0, le=1))
    prune_target: float = field(default=0.3, metadata=rng(ge=0, lt=1))
    prune_epochs: int = field(default=1, metadata=rng(ge=1))
    prune_tolerance: float = field(default=0.01, metadata=rng(ge=0))
    seed: int = 2021
    # ---- inference ----
    mc_samples: int = field(default=8, metadata=rng(ge=1))
    naive_mc: bool = field(default=False, metadata=rng(task=False))  # T full passes (slow)
    unassign_threshold: float = field(default=0.5, metadata=rng(ge=0, le=1))
    tol: ScBERTTolerance = field(default_factory=ScBERTTolerance)
