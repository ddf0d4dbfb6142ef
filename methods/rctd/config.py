"""Config schema of the RCTD method (read-only surface). Defaults follow upstream's
``create.RCTD`` / ``RCTDConfig`` (rctd.md "Defaults"). ``K_val`` (the likelihood table's
count rows; upstream 1000, counts above it clipped) is chosen from the data by default: the
largest spatial count rounded up to a multiple of 100, capped at 1000 — the same weights as
``K_val=1000`` (counts never clipped below 1000) with tables no larger than needed."""

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
    """The ``close`` tier: outputs within these bounds of the baseline count as correct.

    Calibration (``python benchmarks/calibrate_tolerances.py rctd --n-pixels 2000``; synthetic,
    12 types, noise 0.3, platform effect 0.3, σ estimated; per-pixel max|Δw| vs the float64 run):

    ============================  ==========  ========  =============  ================  =======
    variant                       max|Δw|     >1e-5     weights_dbl    sub_weights       scores
    ============================  ==========  ========  =============  ================  =======
    float32 (legitimate)          1.4e-7      0         8.3e-8         8.3e-8            1.7e-7
    batch_size=500 (legitimate)   1e-16       0         0              7e-18             1e-16
    qp_sweeps=10 (wrong)          4.4e-4      95.4%     3.3e-3, 58%    1.1e-4, 52%       80% out
    min_change=2e-3 (wrong)       1.7e-3      100%      6.9e-3, 100%   1.5e-3, 63%       98% out
    final fit 3 iterations        0           0         0.19, 100%     0.15, 63%         —
    ============================  ==========  ========  =============  ================  =======

    So ``max_abs_dw`` 1e-5 sits 70× above float32 and 40× below the smallest planted change;
    ``outlier_fraction`` 1e-3 lets a few pixels whose stopping iteration flips in a lower
    precision pass (one pixel in a 50k-pixel run is 2e-5), while every planted change moves
    more than half of the pixels; ``hard_max_dw`` 5e-2 bounds such a pixel (an IRWLS step moves
    a weight by at most ``step`` × the change that stopped it). ``score_rel`` 1e-6 is 6× float32.
    """

    max_abs_dw: float = field(default=1e-5, metadata=rng(ge=0))
    # share of pixels allowed beyond max_abs_dw, and the cap none may exceed
    outlier_fraction: float = field(default=1e-3, metadata=rng(ge=0, le=1))
    hard_max_dw: float = field(default=5e-2, metadata=rng(ge=0))
    dominant_agreement: float = field(default=0.999, metadata=rng(ge=0, le=1))
    # discrete calls (spot classes, types, type sets, flags) agreeing on at least this fraction
    class_agreement: float = field(default=0.99, metadata=rng(ge=0, le=1))
    # relative tolerance of the scores (NLLs) of doublet / multi mode
    score_rel: float = field(default=1e-6, metadata=rng(ge=0))


@dataclass
class RCTDConfig(MethodConfig):
    ROLE: ClassVar[str] = "spatial+reference"
    TIMING: ClassVar[str] = "repeat"
    DETERMINISM: ClassVar[str] = "bitwise"
    QUALITY: ClassVar[tuple[str, ...]] = ("truth_dominant_accuracy",)  # headline metric(s)

    dtype: str = field(default="float64", metadata=rng(choices=["float32", "float64"], task=False))
    mode: str = field(default="full", metadata=rng(choices=["full", "doublet", "multi"]))
    # sigma x 100 (upstream's sigma_override): skips sigma estimation; None: estimate
    sigma_override: int | None = field(default=None, metadata=rng(ge=10, le=200))
    # likelihood table rows: counts are clipped at K_val; null: from the data (module doc)
    K_val: int | None = field(default=None, metadata=rng(ge=10, le=5000))
    # pixels (sub-fit tasks) per solver batch, memory only; auto: from the free device memory
    # (methods/rctd/memory.py), or from ``memory_gb`` when given
    batch_size: str = field(default="10000", metadata=rng(ge=1, words=["auto"], task=False))
    memory_gb: float | None = field(default=None, metadata=rng(gt=0, task=False))
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
