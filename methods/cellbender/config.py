"""Config schema of the CellBender method (read-only surface). Defaults follow upstream's
remove-background ("full" model; cellbender.md "Defaults")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.api import MethodConfig, rng


@dataclass
class CellBenderTolerance:
    """The ``close`` tier against a baseline (after equal work counters). Calibration:
    ``python benchmarks/calibrate_tolerances.py cellbender`` (figures in the comments)."""

    # cell calls (p > 0.5) agreeing on at least this fraction of analysed droplets
    cell_agreement: float = field(default=0.995, metadata=rng(ge=0, le=1))
    # Σ|denoised − denoised_ref| / Σ denoised_ref over the droplets both call cells
    denoised_rel: float = field(default=0.02, metadata=rng(ge=0))
    # max |χ − χ_ref| / max χ_ref of the inferred ambient profile
    ambient_rel: float = field(default=0.05, metadata=rng(ge=0))
    # mean |p − p_ref| of the cell probabilities
    probability_abs: float = field(default=0.02, metadata=rng(ge=0))


@dataclass
class CellBenderConfig(MethodConfig):
    ROLE: ClassVar[str] = "droplets"
    TIMING: ClassVar[str] = "train"
    # SVI draws and (on GPUs) atomics: the tolerance decides, not the bytes
    DETERMINISM: ClassVar[str] = "statistical"

    # ---- data: which droplets and genes are analysed ----
    expected_cells: int | None = field(default=None, metadata=rng(ge=1))  # null: from priors
    total_droplets_included: int | None = field(default=None, metadata=rng(ge=2))
    low_count_threshold: int = field(default=5, metadata=rng(ge=0))
    # ---- training (upstream defaults) ----
    epochs: int = field(default=150, metadata=rng(ge=1))
    lr: float = field(default=1e-4, metadata=rng(gt=0))  # OneCycle peaks at 10 × lr
    batch_size: int = field(default=256, metadata=rng(ge=4))  # capped at 0.9·N/2
    empty_fraction: float = field(default=0.2, metadata=rng(ge=0, lt=1))
    train_fraction: float = field(default=0.9, metadata=rng(gt=0, le=1))
    test_every: int = field(default=5, metadata=rng(ge=1))
    seed: int = 1234
    # ---- posterior and estimation ----
    fpr: float = field(default=0.01, metadata=rng(ge=0, lt=1))
    estimator: str = field(default="mckp", metadata=rng(choices=["mckp", "map"]))
    posterior_samples: int = field(default=20, metadata=rng(ge=1))
    posterior_window: int = field(default=20, metadata=rng(ge=2))
    dense_max_gb: float = field(default=2.0, metadata=rng(gt=0, task=False))
    tol: CellBenderTolerance = field(default_factory=CellBenderTolerance)
