"""Config schema of the RCTD method (read-only surface)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.schema import MethodConfig, rng


@dataclass
class RCTDTolerance:
    """The ``close`` tier: outputs within these bounds of the baseline count as correct."""

    max_abs_dw: float = field(default=1e-5, metadata=rng(ge=0))
    dominant_agreement: float = field(default=0.999, metadata=rng(ge=0, le=1))


@dataclass
class RCTDConfig(MethodConfig):
    dtype: str = field(default="float64", metadata=rng(choices=["float32", "float64"]))
    mode: str = field(default="full", metadata=rng(choices=["full"]))
    # sigma of the Poisson-lognormal model, times 100 (as upstream's sigma_override)
    sigma_x100: int = field(default=100, metadata=rng(ge=10, le=200))
    # likelihood table rows: counts are clipped at K_val
    K_val: int = field(default=100, metadata=rng(ge=10, le=5000))
    batch_size: int = field(default=10000, metadata=rng(ge=1))
    max_iter: int = field(default=50, metadata=rng(ge=1))
    min_change: float = field(default=1e-3, metadata=rng(gt=0))
    step: float = field(default=0.3, metadata=rng(gt=0, le=1))
    psd_floor: float = field(default=1e-3, metadata=rng(gt=0))
    qp_sweeps: int = field(default=50, metadata=rng(ge=1))
    # reference and pixel filters
    cell_min: int = field(default=25, metadata=rng(ge=1))
    max_cells_per_type: int = field(default=10000, metadata=rng(ge=1))
    ref_umi_min: int = field(default=100, metadata=rng(ge=0))
    umi_min: int = field(default=100, metadata=rng(ge=0))
    umi_max: float = field(default=2e7, metadata=rng(gt=0))
    seed: int = 0
    tol: RCTDTolerance = field(default_factory=RCTDTolerance)
