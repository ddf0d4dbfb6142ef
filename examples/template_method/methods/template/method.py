"""The template method's glue (read-only surface): the class named by ``_target_``.

``check_inputs`` and ``prepare`` (untimed in a benchmark) validate and stage the input;
``run`` (timed) builds the model from the seed, installs the work counters, hands the editable
training loop ``ctx.view()`` (no counters) and returns the outputs; ``compare`` (the tolerance
tier) and ``quality`` (vs the dataset's truth) are the read-only evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import (
    RunContext,
    RunResult,
    Runtime,
    UserError,
    counts_matrix,
    log,
    max_relative_l2,
    seed_everything,
)
from methods.template.config import TemplateConfig
from methods.template.data import KEY
from methods.template.train import LinearAE, fit


@dataclass
class Prepared:
    x: torch.Tensor  # log1p(counts per 10k), cells × genes, on the device


class Template:
    def __init__(self, cfg: TemplateConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime

    def _log(self, message: str) -> None:
        log(self.cfg.name, message)  # "template: <message>" on stderr

    def check_inputs(self, data: Mapping[str, Any]) -> None:
        if KEY not in data:
            raise UserError(f"dataset: loader returned no {KEY!r} AnnData (got {sorted(data)})")
        adata = data[KEY]
        counts_matrix(adata, None, "dataset")  # raw counts, or a one-line error
        if adata.n_obs < self.cfg.batch_size:
            raise UserError(f"method.batch_size={self.cfg.batch_size}: only {adata.n_obs} cells")
        if self.cfg.n_components >= adata.n_vars:
            raise UserError(
                f"method.n_components={self.cfg.n_components}: needs fewer than the "
                f"{adata.n_vars} genes"
            )

    def prepare(self, data: Mapping[str, Any]) -> Prepared:
        m = data[KEY].X
        counts = np.asarray(m.todense() if hasattr(m, "todense") else m, dtype=np.float64)
        total = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        x = np.log1p(counts / total * 1e4)
        self._log(f"{x.shape[0]} cells × {x.shape[1]} genes")
        return Prepared(torch.as_tensor(x, dtype=self.runtime.dtype, device=self.runtime.device))

    def run(self, state: Prepared, ctx: RunContext) -> RunResult:
        c = self.cfg
        seed_everything(c.seed)  # torch, NumPy and random
        model = LinearAE(state.x.shape[1], c.n_components)
        model = model.to(device=self.runtime.device, dtype=self.runtime.dtype)
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
        # work counters: hooks installed here, in read-only code (the loop compares them)
        ctx.work.watch_optimizers()
        ctx.work.watch_gradients(model)
        ctx.work.watch_parameters(model)
        ctx.work.watch_forward(model, "cells")
        fit(model, optimizer, state.x, c.epochs, c.batch_size, c.seed, ctx.view())
        with torch.no_grad():
            embedding = model.encoder(state.x)
            recon = ((model.decoder(embedding) - state.x) ** 2).mean()
        return RunResult(
            outputs={
                "loadings": model.decoder.weight.detach().clone(),  # genes × k
                "embedding": embedding,  # cells × k
                "recon_mse": recon.reshape(1),
            }
        )

    def compare(
        self, result: RunResult, reference: Mapping[str, Any]
    ) -> tuple[dict[str, float], bool]:
        tol, out = self.cfg.tol, result.outputs
        a, b = (
            np.asarray(out["loadings"], np.float64),
            np.asarray(reference["loadings"], np.float64),
        )
        overlap = float("nan")
        if a.shape == b.shape:
            qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
            overlap = float((np.linalg.svd(qa.T @ qb, compute_uv=False) ** 2).mean())
        mse, ref = (
            float(np.asarray(out["recon_mse"])[0]),
            float(np.asarray(reference["recon_mse"])[0]),
        )
        metrics = {
            "loadings_rel": max_relative_l2(out, reference, ("loadings",)),
            "subspace": overlap,
            "recon_rel": abs(mse - ref) / max(abs(ref), 1e-12),
        }
        ok = (
            metrics["loadings_rel"] <= tol.loadings_rel
            and overlap >= tol.subspace  # False for NaN
            and metrics["recon_rel"] <= tol.recon_rel
        )
        return metrics, ok

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        metrics = {"recon_mse": float(np.asarray(result.outputs["recon_mse"])[0])}
        truth = data[KEY].obsm.get("true_latent")
        if truth is not None:  # R² of the true latent regressed on the embedding
            emb = np.asarray(result.outputs["embedding"], np.float64)
            design = np.c_[emb, np.ones(len(emb))]
            fitted = design @ np.linalg.lstsq(design, truth, rcond=None)[0]
            metrics["latent_r2"] = float(
                1 - ((truth - fitted) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum()
            )
        return metrics

    def write_output(self, result: RunResult, data: Mapping[str, Any], path: Path) -> None:
        adata = data[KEY].copy()
        adata.obsm[f"X_{self.cfg.name}"] = np.asarray(result.outputs["embedding"])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        adata.write_h5ad(path)
