"""scBERT as a harness method (read-only glue; TIMING ``train``).

``prepare`` (untimed): tokens from the counts (``binning.py``), the fixed split, the gene
positional embedding (a seeded fixed random matrix, or a local ``.npy``). ``run``: Stage A,
Stage B and pruning (editable ``train.py``), then Monte-Carlo inference (editable
``inference.py``) on the fixed evaluation set (the test split, novel cells included). Work is
counted here by hooks: optimizer steps and learning rates, training cells through the model.
Outputs: the head's tensors and the evaluation logits (hashed), probabilities, entropy, mutual
information, predictions.
"""

from __future__ import annotations

import time
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
    resolve_user_path,
    seed_everything,
)
from methods.scbert import binning, check
from methods.scbert.config import ScBERTConfig
from methods.scbert.data import ROLE
from methods.scbert.inference import mc_predict
from methods.scbert.model import ScBERT
from methods.scbert.train import Plan, train


@dataclass
class ScBERTState:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: np.ndarray
    x_eval: torch.Tensor
    eval_cells: np.ndarray
    classes: list[str]
    gene_embedding: torch.Tensor
    seq_len: int


class ScBERTMethod:
    def __init__(self, cfg: ScBERTConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self._tokens: torch.Tensor | None = None  # every cell's tokens (write_output)
        self._model: ScBERT | None = None  # the last run's trained model (write_output)

    def _log(self, message: str) -> None:
        log("scbert", message)

    def check_inputs(self, data: Mapping[str, Any]) -> None:
        if ROLE not in data:
            raise UserError(f"dataset: loader returned no {ROLE!r} AnnData (got {sorted(data)})")
        adata = data[ROLE]
        counts_matrix(adata, None, "dataset")
        for col in ("label", "split"):
            if col not in adata.obs:
                raise UserError(f"dataset: obs has no {col!r} column (see methods/scbert/data.py)")
        train = adata.obs["split"].to_numpy() == "train"
        labels = adata.obs["label"].astype(str).to_numpy()[train]
        classes, counts = np.unique(labels, return_counts=True)
        if classes.size < 2:
            raise UserError(f"dataset: {classes.size} class(es) in the training split; need 2+")
        if (counts < 2).any():
            raise UserError(f"dataset: training classes with fewer than 2 cells: "
                            f"{dict(zip(classes[counts < 2], counts[counts < 2], strict=True))}")  # fmt: skip

    def _gene_embedding(self, n_genes: int) -> torch.Tensor:
        c = self.cfg
        if c.gene_embedding:
            path = resolve_user_path(c.gene_embedding)
            try:
                emb = np.load(path)
            except Exception as exc:
                raise UserError(
                    f"method.gene_embedding: cannot read {path} ({type(exc).__name__})"
                ) from None
            if emb.shape != (n_genes, c.dim):
                raise UserError(
                    f"method.gene_embedding: {path} is {emb.shape}, need ({n_genes}, {c.dim})"
                )
            return torch.as_tensor(emb, dtype=torch.float32)
        gen = torch.Generator().manual_seed(c.seed + 7)
        return torch.randn(n_genes, c.dim, generator=gen)

    def prepare(self, data: Mapping[str, Any]) -> ScBERTState:
        c, dev = self.cfg, self.runtime.device
        adata = data[ROLE]
        values = binning.log_normalise(adata.X)
        tok = torch.as_tensor(binning.tokens(values, c.bin_num), device=dev)
        split = adata.obs["split"].to_numpy().astype(str)
        novel = (
            adata.obs["novel"].to_numpy() if "novel" in adata.obs else np.zeros(adata.n_obs, bool)
        )
        labels = adata.obs["label"].astype(str).to_numpy()
        classes = sorted(set(labels[(split == "train") & ~novel]))
        index = {k: i for i, k in enumerate(classes)}
        y = np.array([index.get(lab, -1) for lab in labels])

        def part(mask: np.ndarray) -> torch.Tensor:
            return tok[torch.as_tensor(np.flatnonzero(mask), device=dev)]

        train_m, val_m = (split == "train") & ~novel, (split == "val") & ~novel
        eval_cells = np.flatnonzero(split == "test")
        self._tokens = tok
        self._log(f"{int(train_m.sum())} training, {int(val_m.sum())} validation, {eval_cells.size} "
                  f"evaluation cells ({int(novel.sum())} novel); {len(classes)} classes; "
                  f"{adata.n_vars} genes")  # fmt: skip
        return ScBERTState(
            x_train=part(train_m), y_train=torch.as_tensor(y[train_m], device=dev),
            x_val=part(val_m), y_val=y[val_m], x_eval=part(split == "test"),
            eval_cells=eval_cells, classes=classes,
            gene_embedding=self._gene_embedding(adata.n_vars), seq_len=adata.n_vars + 1,
        )  # fmt: skip

    def build(self, state: ScBERTState) -> ScBERT:
        c = self.cfg
        seed_everything(c.seed)
        model = ScBERT(
            c.bin_num + 2, state.seq_len, len(state.classes), c.dim, c.depth, c.heads,
            c.dim_head, c.nb_features, (c.hidden1, c.hidden2), state.gene_embedding,
            c.train_gene_embedding, c.seed,
        )  # fmt: skip
        return model.to(self.runtime.device)

    def run(self, state: ScBERTState, ctx: RunContext) -> RunResult:
        c = self.cfg
        model = self.build(state)
        ctx.work.watch_optimizers()
        ctx.work.watch_forward(model, "train_cells")
        ctx.work.watch_gradients(model)
        ctx.work.watch_parameters(model)
        plan = Plan(c.epochs_a, c.epochs_b, c.batch_size, c.lr, c.kl_weight, c.kl_warmup_epochs,
                    c.prune_step, c.prune_target, c.prune_epochs, c.prune_tolerance, c.seed)  # fmt: skip
        ctx.plan(stageA=c.epochs_a, stageB=c.epochs_a + c.epochs_b)  # console: epoch i/n, time left
        t0 = time.perf_counter()
        with self.runtime.autocast_context():
            log = train(model, state.x_train, state.y_train, state.x_val, state.y_val,
                        len(state.classes), plan, ctx.view(), self._log)  # fmt: skip
        t1 = time.perf_counter()
        x_eval = state.x_eval[:16] if ctx.warmup else state.x_eval
        pred = mc_predict(model, x_eval, c.mc_samples, c.seed, naive=c.naive_mc)
        t2 = time.perf_counter()
        self._model = model
        head = {f"head.{k}": v.detach().clone() for k, v in model.head.state_dict().items()}
        outputs = {
            **head,
            "logits": pred.logits.float(),
            "probs": pred.probs.float(),
            "entropy": pred.entropy.float(),
            "mutual_info": pred.mutual_info.float(),
        }
        info = {
            "train_s": t1 - t0, "mc_s": t2 - t1, "sparsity": log.sparsity,
            "pruned_steps": float(log.pruned_steps), "head_params": float(model.head.parameter_count()),
        }  # fmt: skip
        return RunResult(outputs=outputs, info=info)

    def compare(
        self, result: RunResult, reference: Mapping[str, Any]
    ) -> tuple[dict[str, float], bool]:
        return check.compare(result.outputs, reference, self.cfg.tol)

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        metrics = dict(result.info)
        metrics.update(check.quality(result.outputs, data[ROLE], self.cfg.unassign_threshold))
        return metrics

    def write_output(self, result: RunResult, data: Mapping[str, Any], path: Path) -> None:
        """Every cell with its prediction and split (``output.py``): the test cells' from the
        timed run, the others' from one more Monte-Carlo pass of the trained model."""
        from methods.scbert.output import write_h5ad

        assert self._model is not None and self._tokens is not None, "write_output before run"
        c, tokens, model = self.cfg, self._tokens, self._model

        def predict(rows: np.ndarray) -> dict[str, np.ndarray]:
            idx = torch.as_tensor(rows, device=tokens.device)
            pred = mc_predict(model, tokens[idx], c.mc_samples, c.seed, naive=c.naive_mc)
            return {k: getattr(pred, k).float().cpu().numpy() for k in ("probs", "entropy",
                                                                         "mutual_info")}  # fmt: skip

        write_h5ad(result.outputs, data[ROLE], Path(path), c.unassign_threshold, predict)
