"""Config schema of the RCTD method (read-only surface). Defaults follow upstream's
``create.RCTD`` / ``RCTDConfig`` (rctd.md "Defaults"), except ``K_val`` (100 here, 1000
upstream: counts above K_val are clipped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.api import MethodConfig, rng

# What each mode hashes (weights_hash) when ``hashed_outputs`` is left empty in the YAML.
HASHED_OUTPUTS: dict[str, list[str]] = {
    "full": ["weights", "converged", "pixel_mask", "sigma"],
    "doublet": [
        "weights", "pixel_mask", "sigma", "weights_doublet", "spot_class", "first_type",
        "second_type", "first_class", "second_class", "min_score", "singlet_score",
    ],
    "multi": [
        "weights", "pixel_mask", "sigma", "sub_weights", "cell_type_indices", "n_types",
        "conf_list", "min_score",
    ],
}  # fmt: skip


@dataclass
class RCTDTolerance:
    """The ``close`` tier: outputs within these bounds of the baseline count as correct."""

    max_abs_dw: float = field(default=1e-5, metadata=rng(ge=0))
    dominant_agreement: float = field(default=0.999, metadata=rng(ge=0, le=1))
    # doublet: spot classes, multi: chosen type sets, agreeing on at least this fraction
    class_agreement: float = field(default=0.99, metadata=rng(ge=0, le=1))


@dataclass
class RCTDConfig(MethodConfig):
    ROLE: ClassVar[str] = "spatial+reference"
    TIMING: ClassVar[str] = "repeat"
    DETERMINISM: ClassVar[str] = "bitwise"

    dtype: str = field(default="float64", metadata=rng(choices=["float32", "float64"], task=False))
    mode: str = field(default="full", metadata=rng(choices=["full", "doublet", "multi"]))
    # sigma x 100 (upstream's sigma_override): skips sigma estimation; None: estimate
    sigma_override: int | None = field(default=None, metadata=rng(ge=10, le=200))
    # likelihood table rows: counts are clipped at K_val
    K_val: int = field(default=100, metadata=rng(ge=10, le=5000))
    batch_size: int = field(default=10000, metadata=rng(ge=1, task=False))  # memory only
    max_iter: int = field(default=50, metadata=rng(ge=1))
    score_iter: int = field(default=25, metadata=rng(ge=1))  # sub-fits scored by their NLL
    min_change: float = field(default=1e-3, metadata=rng(gt=0))
    step: float = field(default=0.3, metadata=rng(gt=0, le=1))
    psd_floor: float = field(default=1e-3, metadata=rng(gt=0))
    qp_sweeps: int = field(default=50, metadata=rng(ge=0))
    # finish QPs failing the KKT check after the sweeps with an exact active-set solve
    qp_exact: bool = False
    # reference
    cell_min: int = field(default=25, metadata=rng(ge=1))
    max_cells_per_type: int = field(default=10000, metadata=rng(ge=1))
    ref_umi_min: int = field(default=100, metadata=rng(ge=0))
    # pixels and genes (create.RCTD)
    umi_min: int = field(default=100, metadata=rng(ge=0))
    umi_max: float = field(default=2e7, metadata=rng(gt=0))
    counts_min: int = field(default=10, metadata=rng(ge=0))
    gene_cutoff: float = field(default=1.25e-4, metadata=rng(ge=0))
    fc_cutoff: float = field(default=0.5, metadata=rng(ge=0))
    gene_cutoff_reg: float = field(default=2e-4, metadata=rng(ge=0))
    fc_cutoff_reg: float = field(default=0.75, metadata=rng(ge=0))
    min_obs: int = field(default=3, metadata=rng(ge=0))
    # platform effect (fitBulk): genes with fewer bulk counts sit out the bulk fit
    min_obs_bulk: int = field(default=10, metadata=rng(ge=0))
    max_iter_bulk: int = field(default=100, metadata=rng(ge=1))
    min_change_bulk: float = field(default=1e-4, metadata=rng(gt=0))
    # sigma estimation (choose_sigma_c)
    umi_min_sigma: int = field(default=300, metadata=rng(ge=0))
    n_fit: int = field(default=1000, metadata=rng(ge=1))
    n_epoch: int = field(default=8, metadata=rng(ge=1))
    # doublet / multi
    max_multi_types: int = field(default=4, metadata=rng(ge=1))
    confidence_threshold: float = field(default=5.0, metadata=rng(ge=0))
    doublet_threshold: float = field(default=20.0, metadata=rng(ge=0))
    seed: int = 0  # reference subsampling and the sigma-fit pixel sample
    tol: RCTDTolerance = field(default_factory=RCTDTolerance)

    def __post_init__(self) -> None:
        if not self.hashed_outputs:
            self.hashed_outputs = list(HASHED_OUTPUTS.get(self.mode, []))  # bad mode: ranges say
