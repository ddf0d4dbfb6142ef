"""CellBender remove-background as a harness method (read-only glue; TIMING ``train``).

``prepare`` (untimed): priors from the UMI curve, the analysed droplets (top
``total_droplets_included``), the empties past them and the modelled genes (``priors``), the
train/test split, the counts staged on the device (analysed rows first, then the empties). ``run`` trains (editable ``train.py`` / ``model.py``),
then computes the MAP latents, the noise posterior and the denoised counts (editable
``posterior.py``); work is counted here by hooks the editable code cannot skip. Outputs cover
all droplets and genes of the input: denoised counts (CSR; zero rows for non-cells, excluded
genes passed through for cells), cell probability, size, efficiency, background fraction,
latent z, the ambient profile, the analysed rows and the global latents.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import gammaln

from harness.api import (
    RunContext,
    RunResult,
    Runtime,
    UserError,
    counts_matrix,
    log,
    phase,
    seed_everything,
)
from methods.cellbender import check, memory, priors
from methods.cellbender.config import CellBenderConfig
from methods.cellbender.data import ROLE
from methods.cellbender.model import Constants, FullModel
from methods.cellbender.posterior import denoised, estimate, map_latents, noise_posterior
from methods.cellbender.train import BatchPlan, Staged, make_optimizer, train

MIN_DROPLETS = 16  # below this a BatchNorm minibatch plan makes no sense


@dataclass
class CellBenderState:
    staged: Staged
    plan: BatchPlan
    test: np.ndarray
    consts: Constants
    chi_ambient: torch.Tensor
    priors: priors.Priors
    analysed: np.ndarray  # droplet rows (of the input) analysed, by decreasing UMI
    genes: np.ndarray  # gene columns modelled
    x_analysed: sp.csr_matrix  # all genes, analysed droplets
    n_droplets: int
    n_genes_all: int


GLOBAL_LATENTS = (
    "empty_droplet_size_lognormal_loc", "empty_droplet_size_lognormal_scale",
    "cell_size_lognormal_std", "swapping_fraction_alpha", "swapping_fraction_beta",
    "phi_concentration", "phi_rate",
)  # fmt: skip


def global_latents(model: FullModel) -> np.ndarray:
    """The learned global parameters, in the order of ``GLOBAL_LATENTS``."""
    ra, rb = model.rho_params()
    values = (model.d_empty_loc, model.d_empty_log_scale.exp(), model.d_cell_log_scale.exp(),
              ra, rb, model.phi_log_conc.exp(), model.phi_log_rate.exp())  # fmt: skip
    return np.array([float(v.detach()) for v in values], dtype=np.float64)


class CellBender:
    def __init__(self, cfg: CellBenderConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime

    def _log(self, message: str) -> None:
        log("cellbender", message)

    # ---- inputs --------------------------------------------------------------------------
    def check_inputs(self, data: Mapping[str, Any]) -> None:
        if ROLE not in data:
            raise UserError(f"dataset: loader returned no {ROLE!r} AnnData (got {sorted(data)})")
        adata = data[ROLE]
        x = sp.csr_matrix(counts_matrix(adata, None, "dataset"))
        c = self.cfg
        if adata.n_obs < MIN_DROPLETS or adata.n_vars < 2:
            raise UserError(
                f"dataset: {adata.n_obs} droplets × {adata.n_vars} genes: too few droplets for "
                f"training (BatchNorm minibatches need >= {MIN_DROPLETS})"
            )
        if c.expected_cells is not None and c.expected_cells >= adata.n_obs:
            raise UserError(
                f"method.expected_cells={c.expected_cells}: must be below the number of droplets "
                f"({adata.n_obs})"
            )
        umi = np.asarray(x.sum(axis=1)).ravel()
        p = priors.estimate(umi, c.expected_cells, c.total_droplets_included, c.low_count_threshold)
        low = 0.5 * p.cell_counts
        n_empty = int(np.sum((umi >= c.low_count_threshold) & (umi < low)))
        if n_empty < max(50, p.expected_cells // 2):
            raise UserError(
                f"dataset: only {n_empty} droplets below half the typical cell's {p.cell_counts:.0f} "
                "UMI: remove-background needs the raw, unfiltered matrix (empty droplets "
                "included), not a filtered one"
            )
        n_beyond = int(np.sum(umi > p.low_cutoff)) - p.total_included
        if n_beyond < MIN_DROPLETS:
            raise UserError(
                f"dataset: only {max(n_beyond, 0)} droplets past the {p.total_included} analysed "
                f"ones have more than {p.low_cutoff:.0f} UMI: too few empty droplets to learn the "
                "ambient profile (lower method.total_droplets_included)"
            )
        if c.total_droplets_included is not None and c.total_droplets_included > adata.n_obs:
            raise UserError(
                f"method.total_droplets_included={c.total_droplets_included}: the input has "
                f"only {adata.n_obs} droplets"
            )

    def prepare(self, data: Mapping[str, Any]) -> CellBenderState:
        c, rt = self.cfg, self.runtime
        adata = data[ROLE]
        x_all = sp.csr_matrix(adata.X, dtype=np.float32)
        x_all.sort_indices()
        umi = np.asarray(x_all.sum(axis=1)).ravel()
        p = priors.estimate(
            umi, c.expected_cells, c.total_droplets_included, c.low_count_threshold,
            c.empty_fraction,
        )  # fmt: skip
        order = np.argsort(-umi, kind="stable")
        analysed = order[: min(p.total_included, int(np.sum(umi >= c.low_count_threshold)))]
        rest = order[analysed.size :]
        empties = rest[umi[rest] > p.low_cutoff]
        genes = priors.modelled_genes(x_all, umi, p, c.low_count_threshold)
        x_an = x_all[analysed]
        x = sp.vstack([x_an[:, genes], x_all[empties][:, genes]]).tocsr()
        chi_amb, chi_bar = priors.ambient_profiles(x[analysed.size :], x_all[:, genes])
        n, n_all = analysed.size, x.shape[0]
        gen = np.random.default_rng(c.seed)
        perm = gen.permutation(n)
        n_train = max(4, min(n, math.ceil(c.train_fraction * n)))
        train_idx, test_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])
        if test_idx.size == 0:
            test_idx = train_idx[: min(256, train_idx.size)]
        batch = max(4, min(c.batch_size, int(c.train_fraction * n / 2)))
        plan = BatchPlan(
            cells=train_idx,
            empties=np.arange(n, n_all),
            batch_size=batch,
            empty_fraction=c.empty_fraction,
            seed=c.seed,
        )
        umi_an = np.r_[umi[analysed], umi[empties]]
        log_umi = np.log(np.maximum(umi_an, 1.0))
        dense = n_all * genes.size * 4 <= c.dense_max_gb * 2**30
        lg = np.zeros(n_all)
        rows = np.repeat(np.arange(n_all), np.diff(x.indptr))
        np.add.at(lg, rows, gammaln(x.data.astype(np.float64) + 1.0))
        dev, dtype = rt.device, rt.dtype
        staged = Staged(
            x=torch.as_tensor(x.toarray(), dtype=dtype, device=dev) if dense else None,
            csr=None if dense else x,
            lgamma_x1=torch.as_tensor(lg, dtype=dtype, device=dev),
            prior_logit=torch.as_tensor(p.logit_prior(log_umi), dtype=dtype, device=dev),
            device=dev,
            dtype=dtype,
        )
        consts = Constants(
            log_cell_prior=math.log1p(p.cell_counts),
            d_std=p.d_std,
            log_crossover=p.log_crossover,
            log_cell_counts=math.log(p.cell_counts),
            log_surely_empty=math.log(p.surely_empty),
            chi_bar=torch.as_tensor(chi_bar, dtype=dtype, device=dev),
            log_empty_prior=math.log1p(p.empty_counts),
        )
        self._log(
            f"{n} droplets analysed of {adata.n_obs} (expected cells {p.expected_cells}, cell "
            f"size {p.cell_counts:.0f}, empty size {p.empty_counts:.0f}) and {empties.size} "
            f"empties ({p.low_cutoff:.0f}-{p.surely_empty:.0f} UMI), {genes.size} of "
            f"{adata.n_vars} genes; {plan.batches} batches of {batch} per epoch"
        )
        return CellBenderState(
            staged=staged, plan=plan, test=test_idx, consts=consts,
            chi_ambient=torch.as_tensor(chi_amb, dtype=dtype, device=dev), priors=p,
            analysed=analysed, genes=genes, x_analysed=x_an, n_droplets=adata.n_obs,
            n_genes_all=adata.n_vars,
        )  # fmt: skip

    # ---- the timed run -------------------------------------------------------------------
    def build(self, state: CellBenderState) -> FullModel:
        seed_everything(self.cfg.seed)
        model = FullModel(
            int(state.genes.size), state.chi_ambient.cpu().double(),
            state.priors.empty_counts, state.consts,
        )  # fmt: skip
        return model.to(self.runtime.device, self.runtime.dtype)

    def run(self, state: CellBenderState, ctx: RunContext) -> RunResult:
        c = self.cfg
        model = self.build(state)
        total_steps = state.plan.batches * c.epochs
        optimizer, scheduler = make_optimizer(model, c.lr, total_steps)
        ctx.work.watch_optimizers()
        ctx.work.watch_forward(model.encode_z, "train_droplets")
        ctx.work.watch_modules(model, torch.nn.Dropout, "dropout_calls")
        ctx.work.watch_gradients(model)
        ctx.work.watch_parameters(model)
        ctx.checkpoint.register(model=model, optimizer=optimizer, scheduler=scheduler)
        ctx.plan(train=c.epochs)  # the console's epoch i/n and time left
        t0 = time.perf_counter()
        curve = train(
            model, optimizer, scheduler, state.staged, state.plan, state.test, c.epochs,
            c.test_every, ctx.view(), self._log,
        )  # fmt: skip
        t1 = time.perf_counter()
        # the posterior's work: one decoder pass per droplet (MAP latents), then one per cell
        # and draw — fewer draws averaged would otherwise be close to the full posterior
        ctx.work.watch_inference(model.decoder, "posterior_decoder")
        n = state.analysed.size
        lat = map_latents(model, state.staged, n)
        cells = np.flatnonzero(lat.p > 0.5)
        if ctx.warmup:  # warm the posterior's code paths on a few droplets
            cells = cells[:32]
        x_cells = state.x_analysed[cells][:, state.genes]
        batch = self.posterior_batch(x_cells)
        label = (
            f"noise-count posterior of {cells.size} cells x {state.genes.size} genes "
            f"({x_cells.nnz} nonzero counts), {c.posterior_samples} draws, batches of {batch}"
        )
        with phase(f"warm-up: {label}" if ctx.warmup else label, self._log):
            post = noise_posterior(
                model, state.staged, cells, c.posterior_samples, c.posterior_window,
                batch=batch, seed=c.seed, rate=c.posterior_rate,
            )  # fmt: skip
        t2 = time.perf_counter()
        noise = estimate(post, int(state.genes.size), c.fpr, c.estimator)
        clean = denoised(x_cells, post, noise)
        t3 = time.perf_counter()
        self._log(
            f"estimate done in {t3 - t2:.1f} s: {int(np.minimum(noise, post.x).sum())} counts removed"
        )
        return RunResult(
            outputs=self._outputs(state, model, lat, cells, clean, noise, post, curve),
            info={"train_s": t1 - t0, "posterior_s": t2 - t1, "estimate_s": t3 - t2},
        )

    def posterior_batch(self, x_cells: sp.csr_matrix) -> int:
        """``method.posterior_batch``, or with ``auto`` the most cells, at most 128, whose
        batch the memory holds (methods/cellbender/memory.py)."""
        c = self.cfg
        if c.posterior_batch != "auto":
            return int(c.posterior_batch)
        dev = self.runtime.device
        itemsize = torch.empty((), dtype=self.runtime.dtype).element_size()
        budget = memory.free_bytes(dev, c.memory_gb)
        kept = memory.kept_bytes(x_cells.nnz, c.posterior_window, itemsize)
        kept = 0 if dev.type == "cuda" else kept  # on a GPU the kept posterior is on the host
        nnz = np.diff(x_cells.indptr)
        size = memory.auto_batch(
            x_cells.shape[0], x_cells.shape[1], int(nnz.max()) if nnz.size else 0,
            c.posterior_samples, c.posterior_window, itemsize, budget, kept,
        )  # fmt: skip
        if size < min(memory.CAP, x_cells.shape[0]):
            self._log(
                f"posterior_batch=auto: {size} cells per batch ({budget / 2**30:.2f} GiB "
                f"{'given' if c.memory_gb else 'free'}, {memory.FRACTION:g} of it for the batches)"
            )
        return size

    def _outputs(
        self, state: CellBenderState, model: FullModel, lat: Any, cells: np.ndarray,
        clean: sp.csr_matrix, noise: np.ndarray, post: Any, curve: dict,
    ) -> dict[str, Any]:  # fmt: skip
        """Per input droplet / gene (droplets not analysed: probability 0, no counts)."""
        n_all, g_all = state.n_droplets, state.n_genes_all
        rows = state.analysed[cells]
        # denoised: modelled genes of the cells, plus their excluded genes unchanged (CSR all
        # through: a LIL matrix held ~120 bytes per count, more than the posterior keeps)
        full = state.x_analysed[cells].astype(np.float64)  # a copy: zeroed in place below
        modelled = np.zeros(g_all, dtype=bool)
        modelled[state.genes] = True
        full.data[modelled[full.indices]] = 0.0
        full.eliminate_zeros()
        full = (full + sp.csr_matrix(
            (clean.data, state.genes[clean.indices], clean.indptr), shape=full.shape
        )).tocsr()  # fmt: skip
        coo = full.tocoo()
        denoised_all = sp.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=(n_all, g_all))

        def per_droplet(values: np.ndarray) -> np.ndarray:
            out = np.zeros(n_all)
            out[state.analysed] = values
            return out

        raw_cells = np.asarray(state.x_analysed[cells].sum(axis=1)).ravel()
        removed = raw_cells - np.asarray(full.sum(axis=1)).ravel()
        bkg_frac = np.zeros(n_all)
        bkg_frac[rows] = removed / np.maximum(raw_cells, 1.0)
        z = np.zeros((n_all, lat.z.shape[1]))
        z[state.analysed] = lat.z
        ambient = np.zeros(g_all)
        ambient[state.genes] = torch.softmax(model.chi_ambient_logits.detach(), -1).double().cpu()
        return {
            "denoised": denoised_all,
            "cell_probability": per_droplet(lat.p),
            "cell_size": per_droplet(lat.d_cell),
            "efficiency": per_droplet(lat.eps),
            "background_fraction": bkg_frac,
            "latent_z": z,
            "ambient": ambient,
            "analysed": np.sort(state.analysed).astype(np.int64),
            "global_latents": global_latents(model),
            "elbo_test": np.asarray(curve["elbo_test"], dtype=np.float64),
            "elbo_train": np.asarray(curve["elbo_train"], dtype=np.float64),
        }

    # ---- evaluation (read-only) ----------------------------------------------------------
    def compare(
        self, result: RunResult, reference: Mapping[str, Any]
    ) -> tuple[dict[str, float], bool]:
        return check.compare(result.outputs, reference, self.cfg.tol)

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        metrics = dict(result.info)
        metrics.update(check.quality(result.outputs, data[ROLE]))
        return metrics

    def write_output(self, result: RunResult, data: Mapping[str, Any], path: Path) -> None:
        from methods.cellbender.output import write_h5, write_h5ad

        path = Path(path)
        if path.suffix == ".h5":  # cellbender 0.4.0's layout (+ the _filtered file)
            write_h5(result.outputs, data[ROLE], path)
        else:
            write_h5ad(result.outputs, data[ROLE], path, self.cfg)
