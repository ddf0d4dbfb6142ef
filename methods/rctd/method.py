"""RCTD as a harness method (read-only glue): prepare (untimed) and run (timed).

The timed run covers the whole pipeline from counts to weights: reference profiles, pixel
filters and DE gene lists, platform effect (fitBulk), sigma estimation (unless
``method.sigma_override``), the full fit and the mode's sub-fits. ``prepare`` only moves data
to the device and loads the cached likelihood tables (building the missing ones once).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from harness.api import RunContext, RunResult, Runtime, UserError
from methods.rctd import check, memory, preprocess
from methods.rctd.config import RCTDConfig
from methods.rctd.data import validate_rctd_inputs
from methods.rctd.doublet import run_doublet
from methods.rctd.likelihood import _flat_row_offset
from methods.rctd.multi import run_multi
from methods.rctd.platform import fit_bulk, normalise_profiles
from methods.rctd.qtable import TableStore
from methods.rctd.reference import cell_type_profiles_sparse
from methods.rctd.sigma import SIGMA_START, choose_sigma, sigma_window
from methods.rctd.solver import solve_irwls, tile_elems

K_VAL_MAX = 1000  # upstream's K_val: counts above it are clipped


def auto_k_val(counts: Any) -> int:
    """Table rows for these counts: the largest count rounded up to a multiple of 100, capped
    at K_VAL_MAX — equal weights to K_val=1000 (no count is clipped that upstream keeps)."""
    top = counts.max() if counts.shape[0] and counts.shape[1] else 0
    top = int(np.asarray(top.toarray() if hasattr(top, "toarray") else top).max())
    return int(min(K_VAL_MAX, max(100, -(-top // 100) * 100)))


def _csr(x: Any) -> sp.csr_matrix:
    """Counts as a float64 CSR matrix with sorted indices (sparse stays sparse)."""
    m = sp.csr_matrix(x, dtype=np.float64, copy=True)
    m.has_canonical_format = False  # never trust the flags of a user's matrix
    m.sum_duplicates()  # merges duplicate entries (as a dense copy would) and sorts indices
    return m


@dataclass
class RCTDState:
    """Inputs of the timed run. The counts stay sparse (CSR on the host) until the gene lists
    are chosen; only the selected genes of the kept pixels are densified, in the solver's dtype,
    on the device — memory in proportion to the data, not to pixels × all genes."""

    spatial: sp.csr_matrix  # (pixels, spatial genes) counts
    reference: sp.csr_matrix  # (cells, reference genes) counts, filtered and capped
    codes: np.ndarray  # (cells,) type index
    spatial_genes: np.ndarray  # indices of the shared genes in spatial columns
    reference_genes: torch.Tensor  # ... and in reference columns (on the device)
    not_mito: torch.Tensor  # (shared genes,) False where the name contains "mt-"
    tables: TableStore | None  # sigma x 100 -> likelihood tables
    type_names: list[str]


class RCTD:
    """Robust Cell Type Decomposition: full, doublet and multi mode."""

    def __init__(self, cfg: RCTDConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.type_names: list[str] = []
        self._auto_reported = 0

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
        """Input validation, ``cell_min`` after the reference UMI filter, >= 2 types, and the
        gene lists / pixel filters (so a data problem stops before the tables are built)."""
        validate_rctd_inputs(data, self.cfg.cell_min)
        reference = data["reference"]
        kept = reference.obs["cell_type"].iloc[self._reference_cells(reference)]
        small = {str(t): int(n) for t, n in kept.value_counts().items() if n < self.cfg.cell_min}
        if small:
            raise UserError(
                f"dataset.reference: cell types with fewer than method.cell_min={self.cfg.cell_min} "
                f"cells of >= method.ref_umi_min={self.cfg.ref_umi_min} UMI: {small}"
            )
        n_types = len(reference.obs["cell_type"].cat.categories)
        if n_types < 2:
            raise UserError(f"dataset.reference: RCTD needs >= 2 cell types, found {n_types}")
        state = self._inputs(data, torch.device("cpu"))
        self.type_names = state.type_names
        prof = cell_type_profiles_sparse(
            state.reference, state.codes, n_types, torch.device("cpu"), torch.float64
        )[state.reference_genes]
        sel = preprocess.select_sparse(
            state.spatial, state.spatial_genes, prof, state.not_mito, self.cfg
        )
        print(f"rctd: {int(sel.pixel_mask.sum())} of {state.spatial.shape[0]} pixels kept, "
              f"{len(sel.bulk_genes)} bulk genes, {len(sel.reg_genes)} regression genes "
              f"(of {len(state.spatial_genes)} shared)", file=sys.stderr, flush=True)  # fmt: skip

    def _inputs(self, data: Mapping[str, Any], dev: torch.device) -> RCTDState:
        """Sparse host counts and device gene indices. Cell types are indexed in sorted name
        order (R's factor levels, rctd-py's order): the doublet-mode fallback candidates ("the
        first types") depend on it."""
        spatial, reference = data["spatial"], data["reference"]
        ref = reference[self._reference_cells(reference)]
        shared = spatial.var_names.intersection(reference.var_names, sort=False)
        not_mito = np.array(["mt-" not in str(g) for g in shared], dtype=bool)
        names = [str(c) for c in reference.obs["cell_type"].cat.categories]
        rank = np.argsort(np.argsort(names, kind="stable"), kind="stable")  # category -> index
        codes = rank[np.asarray(ref.obs["cell_type"].cat.codes, dtype=np.int64)]
        return RCTDState(
            spatial=_csr(spatial.X),
            reference=_csr(ref.X),
            codes=codes,
            spatial_genes=np.asarray(spatial.var_names.get_indexer(shared)),
            reference_genes=torch.as_tensor(reference.var_names.get_indexer(shared), device=dev),
            not_mito=torch.as_tensor(not_mito, device=dev),
            tables=None,
            type_names=sorted(names),
        )

    def prepare(self, data: Mapping[str, Any]) -> RCTDState:
        """Move counts to the device; load the likelihood tables (building and caching missing
        ones): sigma_override's, or the first window of sigma estimation. Tables further along
        the estimation path are loaded once by the (untimed) warmup run and kept in memory."""
        dev, dtype = self.runtime.device, self.runtime.dtype
        state = self._inputs(data, dev)
        c = self.cfg
        k_val = c.K_val or auto_k_val(data["spatial"].X)
        sigmas = [c.sigma_override] if c.sigma_override else sigma_window(SIGMA_START)
        state.tables = TableStore(k_val, self.runtime.cache_dir, dev, dtype).preload(sigmas)
        self.type_names = state.type_names
        return state

    def run(self, state: RCTDState, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Counts → weights (module doc)."""
        c = self.cfg
        k = len(state.type_names)
        dev, dtype = self.runtime.device, self.runtime.dtype
        profiles = cell_type_profiles_sparse(state.reference, state.codes, k, dev, dtype)
        profiles = profiles[state.reference_genes]
        sel = preprocess.select_sparse(
            state.spatial, state.spatial_genes, profiles, state.not_mito, c
        )
        kept = state.spatial[np.flatnonzero(sel.pixel_mask.cpu().numpy())]

        def columns(genes: torch.Tensor) -> sp.csr_matrix:  # kept pixels x selected genes
            return kept[:, state.spatial_genes[genes.cpu().numpy()]]

        def sums(x: sp.csr_matrix) -> torch.Tensor:  # per-gene bulk counts (exact in float64)
            return torch.as_tensor(np.asarray(x.sum(axis=0), dtype=np.float64).ravel())

        p = fit_bulk(
            sums(columns(sel.bulk_genes)), sel.numi, profiles[sel.bulk_genes],
            min_obs=c.min_obs_bulk, max_iter=c.max_iter_bulk, min_change=c.min_change_bulk,
            step=c.step, psd_floor=c.psd_floor, qp_sweeps=c.qp_sweeps, qp_exact=c.qp_exact,
        )  # fmt: skip
        # full mode: the solver densifies one batch of pixels at a time; the doublet / multi
        # sub-fits index every pixel's likelihood rows, so they take the dense counts
        counts: Any = columns(sel.reg_genes)
        prof = normalise_profiles(profiles[sel.reg_genes], sums(counts), sel.numi, p)
        if c.mode != "full":
            counts = torch.as_tensor(counts.toarray(), device=dev).to(dtype)
        batch = self.batch_size(counts.shape[0], counts.shape[1], k)
        kw = dict(min_change=c.min_change, step=c.step, psd_floor=c.psd_floor,
                  qp_sweeps=c.qp_sweeps, qp_exact=c.qp_exact, batch_size=batch)  # fmt: skip
        sigma = c.sigma_override or SIGMA_START
        if not c.sigma_override:
            sigma = choose_sigma(
                counts, sel.numi, prof, state.tables, umi_min_sigma=c.umi_min_sigma,
                n_fit=c.n_fit, n_epoch=c.n_epoch, seed=c.seed, solver_kw={"max_iter": c.max_iter, **kw},
            )  # fmt: skip
        assert state.tables is not None
        tables = state.tables[sigma]
        weights, converged = solve_irwls(counts, sel.numi, prof, tables, max_iter=c.max_iter, **kw)
        out = {
            "weights": weights,
            "converged": converged,
            "pixel_mask": sel.pixel_mask,
            "sigma": torch.tensor([sigma / 100.0], dtype=torch.float64),  # (1,): hashable
        }
        if c.mode == "full":
            return out
        row_off = _flat_row_offset(counts, tables)
        sub_kw = dict(max_iter=c.max_iter, score_iter=c.score_iter, solver_kw=kw,
                      confidence_threshold=c.confidence_threshold,
                      doublet_threshold=c.doublet_threshold)  # fmt: skip
        if c.mode == "doublet":
            out.update(run_doublet(row_off, sel.numi, prof, tables, weights, **sub_kw))
        else:
            out.update(
                run_multi(
                    row_off, sel.numi, prof, tables, weights, max_types=c.max_multi_types,
                    **sub_kw,
                )
            )  # fmt: skip
        return out

    def batch_size(self, n_rows: int, n_genes: int, n_types: int) -> int:
        """``method.batch_size``, or with ``auto`` the largest batch the memory holds."""
        c = self.cfg
        if c.batch_size != "auto":
            return int(c.batch_size)
        dev = self.runtime.device
        itemsize = torch.empty((), dtype=self.runtime.dtype).element_size()
        budget = memory.free_bytes(dev, c.memory_gb)
        size = memory.auto_batch_size(
            n_rows, n_genes, n_types, itemsize, tile_elems(dev), budget
        )  # fmt: skip
        if size != self._auto_reported:
            print(f"rctd: batch_size=auto: {size} of {n_rows} pixels per batch "
                  f"({budget / 2**30:.2f} GiB free)", file=sys.stderr)  # fmt: skip
            self._auto_reported = size
        return size

    def compare(
        self, result: RunResult, reference: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        return check.compare(result.outputs, reference, self.cfg.tol, self.cfg.mode)

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        """Agreement with the dataset's ground truth, when it has one."""
        outputs = result.outputs
        conv = np.asarray(outputs["converged"])
        metrics = {"converged_fraction": float(conv.mean()) if conv.size else 1.0}
        metrics["sigma"] = float(np.asarray(outputs["sigma"]).reshape(-1)[0])
        spatial, reference = data["spatial"], data["reference"]
        if "true_weights" not in spatial.obsm:
            return metrics
        names = [str(n) for n in spatial.uns["cell_type_names"]]
        types = sorted(str(t) for t in reference.obs["cell_type"].cat.categories)
        order = [names.index(t) for t in types]
        mask = np.asarray(outputs["pixel_mask"])
        truth = np.asarray(spatial.obsm["true_weights"])[:, order][mask]
        n_true = (
            spatial.obs["true_n_types"].to_numpy()[mask] if "true_n_types" in spatial.obs else None
        )
        metrics.update(check.quality(outputs, truth, n_true, self.cfg.mode))
        return metrics

    def write_output(self, result: RunResult, data: Mapping[str, Any], path: Path) -> None:
        """``run.output``: the spatial AnnData with the results (methods/rctd/output.py)."""
        from methods.rctd.output import write_h5ad

        write_h5ad(result.outputs, data["spatial"], Path(path), self.type_names, self.cfg)
