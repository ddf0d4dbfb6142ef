"""Config schema of the template method (read-only surface): every key of
``conf/method/template.yaml`` with its type, default and range, and the contract declarations.

Imports nothing heavy: the harness validates the config with this module before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.api import MethodConfig, rng


@dataclass
class TemplateTolerance:
    """The ``close`` tier: a run whose outputs are within these bounds of the baseline's (and
    whose work counters equal the baseline's) is correct though its bytes differ.

    Calibration (``cells/template`` defaults, CPU float32; each variant vs the default run):

    =============================  ============  ========  =========
    variant                        loadings_rel  subspace  recon_rel
    =============================  ============  ========  =========
    input perturbed 1e-6 (legit)   1.7e-7        1.0       0
    one thread (legit)             0             1.0       8e-8
    lr x 1.01 (wrong)              1.1e-2        0.99994   1.3e-3
    one epoch fewer (wrong)        4.6e-2        0.998     5.3e-2
    seed 1 (another optimum)       1.37          0.55      2.4e-2
    =============================  ============  ========  =========

    A different learning rate or fewer epochs also change the work counters (``lr_sum``,
    ``optimizer_steps``), which must match exactly before this tier is consulted.
    """

    # ||loadings - loadings_ref|| / ||loadings_ref||
    loadings_rel: float = field(default=5e-3, metadata=rng(ge=0))
    # mean squared cosine of the principal angles between the two loading subspaces (1: same)
    subspace: float = field(default=0.999, metadata=rng(ge=0, le=1))
    # |recon_mse - recon_mse_ref| / recon_mse_ref
    recon_rel: float = field(default=1e-3, metadata=rng(ge=0))


@dataclass
class TemplateConfig(MethodConfig):
    """The method's keys. The capitalised class attributes are its contract declarations."""

    ROLE: ClassVar[str] = "cells"  # the dataset role it needs (harness ROLE_GROUPS)
    TIMING: ClassVar[str] = "train"  # a trainer: warm-up steps, then ONE timed training
    DETERMINISM: ClassVar[str] = "bitwise"  # same seed, same bytes (no atomics, no sampling)
    AUTOCAST: ClassVar[tuple[str, ...]] = ()  # no bf16/fp16 support declared
    QUALITY: ClassVar[tuple[str, ...]] = ("latent_r2", "recon_mse")  # headline, by preference

    n_components: int = field(default=8, metadata=rng(ge=1))
    epochs: int = field(default=20, metadata=rng(ge=1))
    batch_size: int = field(default=128, metadata=rng(ge=1))
    lr: float = field(default=1e-2, metadata=rng(gt=0))
    seed: int = 0
    # the tolerances: the field must be named ``tol`` (kept out of the task identity)
    tol: TemplateTolerance = field(default_factory=TemplateTolerance)
