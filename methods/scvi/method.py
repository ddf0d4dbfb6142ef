"""scVI as a harness method (read-only surface): the trainer contract (TIMING ``train``).

``prepare`` (untimed) filters cells and genes, splits train / held-out cells (seeded) and
stages the counts on the device. ``run`` trains from the seeded initial state for the
configured epoch/step budget (the warm-up: ``ctx.max_steps`` steps), with work counted by
hooks installed here, then evaluates with read-only code (``evaluate.py``): the outputs are
the trained parameters (``state.*``), the latent means of a fixed held-out evaluation set
(both hashed) and the held-out ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from harness.api import (
    RunContext,
    RunResult,
    Runtime,
    UserError,
    counts_matrix,
    log,
    seed_everything,
)
from methods.scvi import check
from methods.scvi.config import SCVIConfig
from methods.scvi.data import BATCH, ROLE, batch_from_keys, select_cells, select_genes
from methods.scvi.evaluate import evaluate
from methods.scvi.model import VAE, VAEShape
from methods.scvi.staging import (
    Batch,
    DeviceSource,
    HostData,
    RowReader,
    StreamSource,
    batch_bounds,
    choose_layout,
    row_stats,
)
from methods.scvi.train import Schedule, TrainResult, make_optimizer, train


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' heuristic: min(round(20000 / n_cells * 400), 400), at least 1."""
    return max(1, min(round(20000 / n_cells * 400), 400))


@dataclass
class SCVIState:
    shape: VAEShape
    schedule: Schedule
    source: DeviceSource | StreamSource
    layout: str
    train_idx: torch.Tensor  # device positions of the training cells (device sources)
    n_train: int
    eval_batch: Batch
    eval_cells: np.ndarray  # obs positions (in the dataset) of the evaluation cells
    cells: np.ndarray  # obs positions of the cells kept by the filters
    genes: np.ndarray  # var positions of the genes kept
    split: tuple[np.ndarray, np.ndarray]  # train / evaluation positions among the kept cells
    lib_means: torch.Tensor
    lib_vars: torch.Tensor


class SCVI:
    """scVI trained on a configured budget; see ``conf/method/scvi.yaml``."""

    def __init__(self, cfg: SCVIConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.last: TrainResult | None = None
        self._eval_cells: np.ndarray | None = None
        self._prepared: tuple[SCVIState, HostData] | None = None  # for write_output

    def _log(self, message: str) -> None:
        log("scvi", message)

    # ---- inputs --------------------------------------------------------------------------
    def check_inputs(self, data: Mapping[str, Any]) -> None:
        if ROLE not in data:
            raise UserError(
                f"dataset: loader returned no {ROLE!r} AnnData (got {sorted(data)}); scVI takes "
                "dataset=cells/synthetic, cells/pbmc68k or cells/h5ad"
            )
        adata = data[ROLE]
        if adata.n_obs < 4 or adata.n_vars < 2:
            raise UserError(f"dataset: too small ({adata.n_obs} cells × {adata.n_vars} genes)")
        if self.cfg.batch_keys is None and BATCH not in adata.obs:
            raise UserError(f"dataset: obs has no {BATCH!r} column; set method.batch_keys")
        if self.cfg.batch_keys is not None:
            batch_from_keys(adata.obs, list(self.cfg.batch_keys), "method.batch_keys")
        if adata.isbacked:
            if self.cfg.n_top_genes is not None:
                raise UserError(
                    "method.n_top_genes: needs the data in memory (dataset.backed=false), "
                    "or pre-select the genes in the file"
                )
        else:
            counts_matrix(adata, None, "dataset")

    def _host(self, adata: Any) -> tuple[HostData, np.ndarray, np.ndarray]:
        """Filtered counts and per-cell constants, the kept obs and var positions."""
        c = self.cfg
        keys = list(c.batch_keys) if c.batch_keys is not None else [BATCH]
        batch_all = batch_from_keys(adata.obs, keys, "method.batch_keys")
        if adata.isbacked:
            reader = RowReader(adata.filename, adata.n_vars)
            n = adata.n_obs
            umi, n_det, log_lib, lg = (np.zeros(n) for _ in range(4))
            for lo in range(0, n, c.chunk_cells):  # one pass: check, filter stats, constants
                block = reader.read(lo, min(lo + c.chunk_cells, n))
                if block.nnz and (
                    block.data.min() < 0 or np.any(block.data != np.rint(block.data))
                ):
                    raise UserError(f"dataset: {adata.filename} X holds non-count values")
                hi = lo + block.shape[0]
                umi[lo:hi] = np.asarray(block.sum(axis=1)).ravel()
                n_det[lo:hi] = np.diff(block.indptr)
                with np.errstate(divide="ignore"):
                    log_lib[lo:hi], lg[lo:hi] = row_stats(block)
            cells = np.flatnonzero((umi >= c.min_counts) & (n_det >= c.min_genes))
            if cells.size != n:
                raise UserError(
                    f"dataset: {n - cells.size} cells fail method.min_counts/min_genes; "
                    "streaming needs a pre-filtered file"
                )
            host = HostData(None, reader, np.zeros(0), log_lib, lg, adata.n_vars)
            genes = np.arange(adata.n_vars)
        else:
            x = sp.csr_matrix(adata.X, dtype=np.float32)
            cells = select_cells(x, 1, c.min_genes)
            genes = select_genes(x[cells], c.n_top_genes, c.hvg_flavor)
            x = x[cells][:, genes]
            keep = select_cells(x, c.min_counts, 0)
            cells, x = cells[keep], x[keep]
            x.sort_indices()
            log_lib, lg = row_stats(x)
            host = HostData(x, None, np.zeros(0), log_lib, lg, x.shape[1])
        if cells.size < 4:
            raise UserError(f"dataset: {cells.size} cells left after the method's filters")
        kept = pd.Categorical(np.asarray(batch_all)[cells])
        host.batch = np.asarray(kept.codes, dtype=np.int64)
        return host, cells, genes

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded train / held-out split; a training tail that BatchNorm cannot take moves out."""
        c = self.cfg
        perm = np.random.default_rng(c.seed).permutation(n)
        n_train = min(n, math.ceil(c.train_size * n))
        tail = n_train % c.batch_size
        if n_train > c.batch_size and 0 < tail < 3:
            n_train -= tail
        if n_train < 3:
            raise UserError(f"method.train_size={c.train_size}: only {n_train} training cells")
        train_idx, held = np.sort(perm[:n_train]), perm[n_train:]
        evaluation = held if held.size else perm[:n_train]
        return train_idx, np.sort(evaluation[: c.n_eval_cells])

    def prepare(self, data: Mapping[str, Any]) -> SCVIState:
        c, rt = self.cfg, self.runtime
        host, cells, genes = self._host(data[ROLE])
        n = host.n_cells
        train_idx, eval_idx = self._split(n)
        layout = choose_layout(host, c.staging, c.device_fraction, rt.device)
        n_batch = int(host.batch.max()) + 1
        max_epochs = c.max_epochs or default_max_epochs(n)
        if (
            c.n_steps_kl_warmup is None
            and c.n_epochs_kl_warmup
            and max_epochs < c.n_epochs_kl_warmup
        ):
            reach = c.min_kl_weight + (c.max_kl_weight - c.min_kl_weight) * (
                (max_epochs - 1) / c.n_epochs_kl_warmup
            )
            self._log(
                f"max_epochs={max_epochs} < n_epochs_kl_warmup={c.n_epochs_kl_warmup}: the KL "
                f"weight only reaches {reach:.3g} (set method.n_epochs_kl_warmup to change it)"
            )
        if layout == "stream":
            mask = np.zeros(n, dtype=bool)
            mask[train_idx] = True
            source: DeviceSource | StreamSource = StreamSource(
                host, mask, rt.device, rt.dtype, c.chunk_cells, c.workers, c.seed
            )
            eval_batch = source.gather_host(eval_idx)
            train_t = torch.as_tensor(train_idx)
        else:
            source = DeviceSource(host, layout, rt.device, rt.dtype)
            train_t = torch.as_tensor(train_idx, device=rt.device)
            eval_batch = source.gather(torch.as_tensor(eval_idx, device=rt.device))
        lib_means = np.zeros(n_batch)
        lib_vars = np.ones(n_batch)
        for b in range(n_batch):
            vals = host.log_lib[host.batch == b]
            if vals.size:
                lib_means[b], lib_vars[b] = vals.mean(), max(vals.var(), 1e-4)
        shape = VAEShape(
            n_genes=host.n_genes,
            n_batch=n_batch,
            n_hidden=c.n_hidden,
            n_latent=c.n_latent,
            n_layers=c.n_layers,
            dropout_rate=c.dropout_rate,
            dispersion=c.dispersion,
            gene_likelihood=c.gene_likelihood,
            log_variational=c.log_variational,
            use_observed_lib_size=c.use_observed_lib_size,
            encode_covariates=c.encode_covariates,
            deeply_inject_covariates=c.deeply_inject_covariates,
        )
        schedule = Schedule(
            max_epochs=max_epochs,
            max_steps=c.max_steps,
            n_epochs_kl_warmup=c.n_epochs_kl_warmup,
            n_steps_kl_warmup=c.n_steps_kl_warmup,
            max_kl_weight=c.max_kl_weight,
            min_kl_weight=c.min_kl_weight,
        )
        self._log(
            f"{n} cells ({train_idx.size} train, {eval_idx.size} eval) × {host.n_genes} genes, "
            f"{n_batch} batches; staging {layout}; {max_epochs} epochs × "
            f"{len(batch_bounds(train_idx.size, c.batch_size))} steps"
        )
        self._eval_cells = cells[eval_idx]
        state = SCVIState(
            shape=shape,
            schedule=schedule,
            source=source,
            layout=layout,
            train_idx=train_t,
            n_train=int(train_idx.size),
            eval_batch=eval_batch,
            eval_cells=cells[eval_idx],
            cells=cells,
            genes=genes,
            split=(train_idx, eval_idx),
            lib_means=torch.as_tensor(lib_means, dtype=rt.dtype),
            lib_vars=torch.as_tensor(lib_vars, dtype=rt.dtype),
        )
        self._prepared = (state, host)
        return state

    # ---- the timed run -------------------------------------------------------------------
    def build(self, state: SCVIState) -> VAE:
        """The model in its seeded initial state, on the device."""
        seed = self.cfg.seed
        seed_everything(seed)
        model = VAE(state.shape, state.lib_means, state.lib_vars)
        return model.to(self.runtime.device, self.runtime.dtype)

    def run(self, state: SCVIState, ctx: RunContext) -> RunResult:
        """Train (the editable ``train``), then evaluate with read-only code.

        The work is counted here, by hooks the editable code cannot skip (it is handed
        ``ctx.view()``, without the counters): optimizer steps and the learning rates they
        used, gradients accumulated into the parameters, parameter tensors that moved, training
        cells through the model's forward, active dropout calls."""
        c, rt = self.cfg, self.runtime
        model = self.build(state)
        optimizer = make_optimizer(model, c.lr, c.adam_eps, c.weight_decay)
        ctx.work.watch_optimizers()
        ctx.work.watch_forward(model, "train_cells")
        ctx.work.watch_modules(model, torch.nn.Dropout, "dropout_calls")
        ctx.work.watch_gradients(model)
        ctx.work.watch_parameters(model)
        if isinstance(state.source, StreamSource):
            src = state.source

            def epochs(epoch: int, start: int) -> Any:
                return src.epoch(c.batch_size, c.seed, epoch, start)
        else:
            dev_src = state.source

            def epochs(epoch: int, start: int) -> Any:
                return dev_src.epoch(state.train_idx, c.batch_size, c.seed, epoch, start)

        ctx.checkpoint.register(model=model, optimizer=optimizer)
        ctx.plan(train=state.schedule.max_epochs)  # the console's epoch i/n and time left
        self.last = train(
            model, optimizer, epochs, state.schedule, ctx.view(), rt.autocast_context, self._log
        )
        model.eval()
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ev = state.eval_batch
        evaluated = evaluate(params, state.shape, ev.x, ev.batch, ev.log_lib, ev.lgamma_x1, c.seed)
        outputs: dict[str, Any] = {f"state.{k}": v for k, v in params.items()}
        outputs.update(evaluated)
        history = self.last.history
        outputs["elbo_train"] = np.asarray(history.get("elbo_train", []), dtype=np.float64)
        info = {"cells_per_s": self.last.cells_per_s, "train_s": self.last.seconds}
        return RunResult(outputs=outputs, info=info)

    # ---- checks and reporting ------------------------------------------------------------
    def compare(
        self, result: RunResult, reference: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        return check.compare(result.outputs, reference, self.cfg.tol)

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        """Throughput and ELBOs; with ground truth: latent recovery, batch mixing, purity."""
        outputs = result.outputs
        metrics: dict[str, float] = {"elbo_heldout": float(np.ravel(outputs["elbo_heldout"])[0])}
        metrics.update(result.info)
        elbo_train = np.ravel(outputs.get("elbo_train", []))
        metrics["epochs"] = float(elbo_train.size)
        if elbo_train.size:
            metrics["elbo_train_final"] = float(elbo_train[-1])
        adata = data[ROLE]
        cells = self._eval_cells
        latent = np.asarray(outputs["latent"], dtype=np.float64)
        if cells is None or cells.size != latent.shape[0] or latent.shape[0] < 20:
            return metrics
        k = self.cfg.tol.knn_k
        if "true_latent" in adata.obsm:
            truth = np.asarray(adata.obsm["true_latent"])[cells]
            metrics["truth_latent_r2"] = check.linear_probe_r2(latent, truth)
            metrics["truth_knn_overlap"] = check.knn_overlap(latent, truth, k)
        batch = adata.obs[BATCH].to_numpy()[cells] if BATCH in adata.obs else None
        if batch is not None and np.unique(batch).size > 1:
            metrics["batch_mixing_latent"] = check.batch_mixing(latent, batch, k)
            if not adata.isbacked:
                counts = sp.csr_matrix(adata.X[cells]).toarray().astype(np.float64)
                inputs = check.pca(check.lognorm(counts), latent.shape[1])
                metrics["batch_mixing_input"] = check.batch_mixing(inputs, batch, k)
        if "cell_type" in adata.obs:
            labels = adata.obs["cell_type"].astype(str).to_numpy()[cells]
            metrics["label_purity_latent"] = check.label_purity(latent, labels, k)
        return metrics

    def write_output(self, result: RunResult, data: Mapping[str, Any], path: Path) -> None:
        """Every input cell and gene, the latent in obsm["X_scVI"] (``output.py``)."""
        from methods.scvi.output import write_h5ad

        assert self._prepared is not None, "write_output before prepare"
        state, host = self._prepared
        write_h5ad(result.outputs, data[ROLE], state, host, self.cfg, Path(path))
