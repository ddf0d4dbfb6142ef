"""CellWhisperer (CLIP between transcriptomes and text) as a harness method (read-only glue;
TIMING ``train``).

``prepare`` (untimed): gene medians from the training cells, rank-value tokens for all cells,
a word-level text tokenizer trained on the training captions, the zero-shot prompts (one per
label: "A sample of {label} from a healthy individual"). ``run``: the towers and heads built
from a seed, trained (editable ``train.py``), then the evaluation cells, their captions and
the prompts embedded; work counted here by hooks (optimizer steps and learning rates, training
pairs through the text tower). Outputs: the heads and t (hashed), the zero-shot logits on the
evaluation set (hashed), the embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
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
from methods.cellwhisperer import check
from methods.cellwhisperer.config import CellWhispererConfig
from methods.cellwhisperer.data import PROMPT, ROLE
from methods.cellwhisperer.tokenize import TextTokens, gene_medians, rank_tokens


@dataclass
class WhisperState:
    cell_tokens: torch.Tensor  # training cells
    text_ids: torch.Tensor
    text_mask: torch.Tensor
    eval_tokens: torch.Tensor
    eval_ids: torch.Tensor
    eval_mask: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    labels: list[str]
    n_genes: int
    text_vocab: int


class CellWhisperer:
    def __init__(self, cfg: CellWhispererConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self._inputs: tuple[torch.Tensor, ...] | None = None  # all cells (write_output)
        self._model: Any = None  # the last run's trained model (write_output)

    def _log(self, message: str) -> None:
        log("cellwhisperer", message)

    def _path(self, key: str) -> str | None:
        value = getattr(self.cfg, key)
        if not value:
            return None
        path = resolve_user_path(value)
        if not Path(path).exists():
            raise UserError(f"method.{key}: no local model at {path} (models are never downloaded)")
        return path

    def check_inputs(self, data: Mapping[str, Any]) -> None:
        if ROLE not in data:
            raise UserError(f"dataset: loader returned no {ROLE!r} AnnData (got {sorted(data)})")
        adata = data[ROLE]
        counts_matrix(adata, None, "dataset")
        for col in ("caption", "cell_type", "split"):
            if col not in adata.obs:
                raise UserError(
                    f"dataset: obs has no {col!r} column (see methods/cellwhisperer/data.py)"
                )
        split = adata.obs["split"].to_numpy().astype(str)
        if (split == "train").sum() < self.cfg.batch_size:
            raise UserError(f"method.batch_size={self.cfg.batch_size}: only "
                            f"{int((split == 'train').sum())} training cells")  # fmt: skip
        if not (split == "test").any():
            raise UserError("dataset: no test cells for the zero-shot evaluation")
        self._path("cell_model")
        self._path("text_model")

    def prepare(self, data: Mapping[str, Any]) -> WhisperState:
        c, dev = self.cfg, self.runtime.device
        adata = data[ROLE]
        x = sp.csr_matrix(adata.X)
        split = adata.obs["split"].to_numpy().astype(str)
        train, test = split == "train", split == "test"
        medians = gene_medians(x[train])
        tokens = rank_tokens(x, medians, c.max_tokens).to(dev)
        captions = adata.obs["caption"].astype(str).tolist()
        text = TextTokens([captions[i] for i in np.flatnonzero(train)], self._path("text_model"),
                          c.max_text_tokens)  # fmt: skip
        labels = (
            [str(v) for v in adata.obs["cell_type"].cat.categories]
            if hasattr(adata.obs["cell_type"], "cat")
            else sorted(set(adata.obs["cell_type"].astype(str)))
        )
        ids, mask = text(captions)
        p_ids, p_mask = text([PROMPT.format(type=lab) for lab in labels])
        tr, te = torch.as_tensor(np.flatnonzero(train)), torch.as_tensor(np.flatnonzero(test))
        self._inputs = (tokens, ids, mask)
        self._log(f"{int(train.sum())} training pairs, {int(test.sum())} evaluation cells, "
                  f"{len(labels)} labels, {x.shape[1]} genes, text vocabulary {text.vocab_size}")  # fmt: skip
        return WhisperState(
            cell_tokens=tokens[tr.to(dev)], text_ids=ids[tr].to(dev), text_mask=mask[tr].to(dev),
            eval_tokens=tokens[te.to(dev)], eval_ids=ids[te].to(dev), eval_mask=mask[te].to(dev),
            prompt_ids=p_ids.to(dev), prompt_mask=p_mask.to(dev), labels=labels,
            n_genes=x.shape[1], text_vocab=text.vocab_size,
        )  # fmt: skip

    def build(self, state: WhisperState) -> Any:
        from methods.cellwhisperer.model import CellTower, Clip, TextTower, bert

        c = self.cfg
        seed_everything(c.seed)
        cell = CellTower(bert(state.n_genes + 2, c.cell_hidden, c.cell_layers, c.cell_heads,
                              c.max_tokens + 2, "relu", c.dropout, self._path("cell_model")),
                         c.emb_layer)  # fmt: skip
        text = TextTower(bert(state.text_vocab, c.text_hidden, c.text_layers, c.text_heads,
                              c.max_text_tokens + 2, "gelu", c.dropout, self._path("text_model")))  # fmt: skip
        return Clip(cell, text, c.projection).to(self.runtime.device)

    def run(self, state: WhisperState, ctx: RunContext) -> RunResult:
        from methods.cellwhisperer.train import Plan, embed, train

        c = self.cfg
        model = self.build(state)
        ctx.work.watch_optimizers()
        ctx.work.watch_forward(model.text_head, "train_pairs")
        ctx.work.watch_gradients(model)
        ctx.work.watch_parameters(model)
        plan = Plan(c.epochs, c.batch_size, c.lr, c.weight_decay, c.frozen_warmup, c.locking,
                    c.cache, c.seed)  # fmt: skip
        ctx.plan(text_frozen=c.epochs, unlocked=c.epochs)  # the console's epoch i/n and time left
        t0 = time.perf_counter()
        try:
            stats = train(model, state.cell_tokens, state.text_ids, state.text_mask, plan, ctx.view(),
                          self.runtime.autocast_context, self._log)  # fmt: skip
        except FloatingPointError as exc:
            raise UserError(f"method {c.name}: {exc} (lower method.lr?)") from None
        t1 = time.perf_counter()
        cells, captions = embed(model, state.eval_tokens, state.eval_ids, state.eval_mask)
        _, prompts = embed(model, state.eval_tokens[:1], state.prompt_ids, state.prompt_mask)
        scale = model.log_scale.detach().exp()
        t2 = time.perf_counter()
        self._model = model
        heads = {f"{k}": v.detach().clone() for k, v in model.state_dict().items()
                 if k.startswith(("cell_head.", "text_head."))}  # fmt: skip
        outputs = {
            **heads,
            "log_scale": model.log_scale.detach().reshape(1).clone(),
            "zeroshot_logits": (scale * cells @ prompts.T).float(),
            "cell_embeddings": cells.float(),
            "caption_embeddings": captions.float(),
            "prompt_embeddings": prompts.float(),
        }
        info = {"train_s": t1 - t0, "embed_s": t2 - t1,
                "pairs_per_s": stats["pairs"] / max(t1 - t0, 1e-9),
                "cells_per_s_embed": state.eval_tokens.shape[0] / max(t2 - t1, 1e-9)}  # fmt: skip
        return RunResult(outputs=outputs, info=info)

    def compare(
        self, result: RunResult, reference: Mapping[str, Any]
    ) -> tuple[dict[str, float], bool]:
        return check.compare(result.outputs, reference, self.cfg.tol)

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        metrics = dict(result.info)
        metrics.update(check.quality(result.outputs, data[ROLE]))
        return metrics

    def write_output(self, result: RunResult, data: Mapping[str, Any], path: Path) -> None:
        """Every cell with its embeddings, prompt scores and split (``output.py``): the test
        cells' from the timed run, the others' from one more pass of the trained model."""
        from methods.cellwhisperer.output import write_h5ad
        from methods.cellwhisperer.train import embed

        assert self._model is not None and self._inputs is not None, "write_output before run"
        tokens, ids, mask = self._inputs

        def encode(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            i = torch.as_tensor(rows)
            cells, texts = embed(self._model, tokens[i.to(tokens.device)], ids[i].to(tokens.device),
                                 mask[i].to(tokens.device))  # fmt: skip
            return cells.float().cpu().numpy(), texts.float().cpu().numpy()

        write_h5ad(result.outputs, data[ROLE], Path(path), encode)
