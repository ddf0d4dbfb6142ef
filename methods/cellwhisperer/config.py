"""Config schema of the CellWhisperer-style CLIP model (read-only surface). Small towers by
default (a ~1 minute CPU run from random initialisation); ``text_model`` / ``cell_model`` load
a user's pretrained HF checkpoints from local paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.api import MethodConfig, rng


@dataclass
class CellWhispererTolerance:
    """The ``close`` tier against a baseline (after equal work counters)."""

    label_agreement: float = field(default=0.99, metadata=rng(ge=0, le=1))
    logits_rel: float = field(default=0.05, metadata=rng(ge=0))  # of the largest |logit|
    head_rel: float = field(default=0.05, metadata=rng(ge=0))  # relative L2 of each head tensor


@dataclass
class CellWhispererConfig(MethodConfig):
    ROLE: ClassVar[str] = "cells+captions"
    TIMING: ClassVar[str] = "train"
    DETERMINISM: ClassVar[str] = "statistical"  # bf16 runs and GPU atomics vary bytewise
    AUTOCAST: ClassVar[tuple[str, ...]] = ("bf16",)

    # ---- transcriptome tower ----
    max_tokens: int = field(default=128, metadata=rng(ge=4))  # upstream: 2048
    cell_hidden: int = field(default=128, metadata=rng(ge=8))
    cell_layers: int = field(default=2, metadata=rng(ge=1))
    cell_heads: int = field(default=4, metadata=rng(ge=1))
    emb_layer: int = -1  # -1: the second-to-last hidden layer (Geneformer's convention)
    cell_model: str | None = None  # a local pretrained BERT-style checkpoint
    # ---- text tower ----
    text_hidden: int = field(default=128, metadata=rng(ge=8))
    text_layers: int = field(default=2, metadata=rng(ge=1))
    text_heads: int = field(default=4, metadata=rng(ge=1))
    max_text_tokens: int = field(default=32, metadata=rng(ge=4))
    text_model: str | None = None  # a local pretrained checkpoint (and its tokenizer)
    # ---- heads and training ----
    projection: int = field(default=2048, metadata=rng(ge=2))
    locking: str = field(default="LU", metadata=rng(choices=["LU", "UU"]))
    cache: bool = field(default=True, metadata=rng(task=False))  # LU: tower outputs once
    epochs: int = field(default=10, metadata=rng(ge=1))
    batch_size: int = field(default=64, metadata=rng(ge=2))  # sets the negatives
    lr: float = field(default=5e-4, metadata=rng(gt=0))
    weight_decay: float = field(default=0.01, metadata=rng(ge=0))
    frozen_warmup: float = field(default=0.03, metadata=rng(ge=0, lt=1))
    dropout: float = field(default=0.02, metadata=rng(ge=0, lt=1))
    seed: int = 0
    tol: CellWhispererTolerance = field(default_factory=CellWhispererTolerance)
