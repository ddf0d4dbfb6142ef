"""RCTD as a harness method: prepare (untimed) and run (timed) full-mode deconvolution."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import UserError
from harness.runtime import Runtime
from methods.rctd import check
from methods.rctd.config import RCTDConfig
from methods.rctd.data import validate_rctd_inputs
from methods.rctd.likelihood import LikelihoodTables, load_or_build_tables
from methods.rctd.reference import cell_type_profiles
from methods.rctd.solver import solve_irwls


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


@dataclass
class RCTDState:
    """Device-resident inputs of the timed run."""

    spatial: torch.Tensor  # (pixels, spatial genes) counts
    reference: torch.Tensor  # (cells, reference genes) counts, filtered and capped
    codes: torch.Tensor  # (cells,) type index
    spatial_genes: torch.Tensor  # indices of the shared genes in spatial columns
    reference_genes: torch.Tensor  # ... and in reference columns
    tables: LikelihoodTables
    type_names: list[str]


class RCTD:
    """Robust Cell Type Decomposition, full mode (sigma fixed from config)."""

    def __init__(self, cfg: RCTDConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime

    def _reference_cells(self, reference: Any) -> np.ndarray:
        """Indices of reference cells kept: UMI ≥ ref_umi_min, each type capped (seeded)."""
        umi = np.asarray(reference.X.sum(axis=1)).ravel()
        codes = reference.obs["cell_type"].cat.codes.to_numpy()
        rng = np.random.default_rng(self.cfg.seed)
        keep: list[np.ndarray] = []
        for k in range(len(reference.obs["cell_type"].cat.categories)):
            idx = np.flatnonzero((codes == k) & (umi >= self.cfg.ref_umi_min))
            if idx.size > self.cfg.max_cells_per_type:
                idx = np.sort(rng.choice(idx, self.cfg.max_cells_per_type, replace=False))
            keep.append(idx)
        return np.sort(np.concatenate(keep))

    def check_inputs(self, data: Mapping[str, Any]) -> None:
        """Input validation, then ``cell_min`` again after the reference UMI filter."""
        validate_rctd_inputs(data, self.cfg.cell_min)
        reference = data["reference"]
        kept = reference.obs["cell_type"].iloc[self._reference_cells(reference)]
        small = {str(t): int(n) for t, n in kept.value_counts().items() if n < self.cfg.cell_min}
        if small:
            raise UserError(
                f"dataset.reference: cell types with fewer than method.cell_min={self.cfg.cell_min} "
                f"cells of >= method.ref_umi_min={self.cfg.ref_umi_min} UMI: {small}"
            )

    def prepare(self, data: Mapping[str, Any]) -> RCTDState:
        """Move counts to the device and load the cached likelihood table (built once)."""
        spatial, reference = data["spatial"], data["reference"]
        dev, dtype = self.runtime.device, self.runtime.dtype
        cells = self._reference_cells(reference)
        ref = reference[cells]
        shared = spatial.var_names.intersection(reference.var_names, sort=False)
        tables = load_or_build_tables(self.cfg.sigma_x100, self.cfg.K_val, self.runtime.cache_dir)
        return RCTDState(
            spatial=torch.as_tensor(_dense(spatial.X), dtype=dtype, device=dev),
            reference=torch.as_tensor(_dense(ref.X), dtype=dtype, device=dev),
            codes=torch.as_tensor(
                np.array(ref.obs["cell_type"].cat.codes, dtype=np.int64), device=dev
            ),
            spatial_genes=torch.as_tensor(spatial.var_names.get_indexer(shared), device=dev),
            reference_genes=torch.as_tensor(reference.var_names.get_indexer(shared), device=dev),
            tables=tables.to(dev, dtype),
            type_names=[str(c) for c in reference.obs["cell_type"].cat.categories],
        )

    def run(self, state: RCTDState) -> dict[str, torch.Tensor]:
        """Counts → weights: profiles, pixel filter, batched IRWLS over all pixels."""
        c = self.cfg
        profiles = cell_type_profiles(state.reference, state.codes, len(state.type_names))
        profiles = profiles[state.reference_genes]
        numi = state.spatial.sum(dim=1)
        mask = (numi >= c.umi_min) & (numi <= c.umi_max)
        counts = state.spatial[mask][:, state.spatial_genes]
        weights, converged = solve_irwls(
            counts,
            numi[mask],
            profiles,
            state.tables,
            max_iter=c.max_iter,
            min_change=c.min_change,
            step=c.step,
            psd_floor=c.psd_floor,
            qp_sweeps=c.qp_sweeps,
            batch_size=c.batch_size,
        )
        return {"weights": weights, "converged": converged, "pixel_mask": mask}

    def compare(
        self, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        return check.compare(outputs, reference, self.cfg.tol)

    def quality(
        self, outputs: Mapping[str, np.ndarray], data: Mapping[str, Any]
    ) -> dict[str, float]:
        """Dominant-type accuracy against the dataset's true weights, when it has them."""
        spatial, reference = data["spatial"], data["reference"]
        metrics = {
            "converged_fraction": float(np.mean(outputs["converged"]))
            if outputs["converged"].size
            else 1.0
        }
        if "true_weights" not in spatial.obsm:
            return metrics
        names = [str(n) for n in spatial.uns["cell_type_names"]]
        order = [names.index(str(t)) for t in reference.obs["cell_type"].cat.categories]
        truth = np.asarray(spatial.obsm["true_weights"])[:, order][
            np.asarray(outputs["pixel_mask"])
        ]
        metrics.update(check.quality(np.asarray(outputs["weights"]), truth))
        return metrics
