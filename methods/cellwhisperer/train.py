"""Training (editable surface): LU or UU locking, AdamW, warm-up + cosine, checkpoints.

``LU``: the transcriptome tower is locked — its features are computed ONCE per cell before
training and reused (``cache=False`` recomputes them every step, for the speed comparison;
identical results, the tower being frozen in eval mode). ``UU``: both towers train. The text
tower is frozen for the first ``frozen_warmup`` fraction of steps (only the heads train),
then unlocked. AdamW (betas 0.9/0.98); the learning rate rises linearly over the first 3% of
steps, then follows a cosine down to lr/20. Phases in the series: ``warmup``, ``unlocked``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Plan:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    frozen_warmup: float
    locking: str  # LU | UU
    cache: bool
    seed: int


def schedule(step: int, total: int, warmup: float = 0.03) -> float:
    """The learning-rate factor at ``step``: linear warm-up, then cosine to 1/20."""
    w = max(1, int(warmup * total))
    if step < w:
        return (step + 1) / w
    progress = (step - w) / max(1, total - w)
    return 1 / 20 + (1 - 1 / 20) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def cell_features(model: Any, tokens: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.cell.eval()
    return torch.cat(
        [model.cell(tokens[lo : lo + batch]) for lo in range(0, tokens.shape[0], batch)]
    )


def train(
    model: Any,
    cell_tokens: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    plan: Plan,
    ctx: Any,
    autocast: Callable[[], Any],
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, float]:
    n = cell_tokens.shape[0]
    per_epoch = max(1, n // plan.batch_size)
    total = per_epoch * plan.epochs
    frozen_until = int(plan.frozen_warmup * total)
    towers = list(model.text.parameters()) + (
        list(model.cell.parameters()) if plan.locking == "UU" else []
    )
    heads = [p for name, p in model.named_parameters() if not name.startswith(("text.", "cell."))]
    opt = torch.optim.AdamW(
        [{"params": towers, "weight_decay": plan.weight_decay}, {"params": heads, "weight_decay": 0.0}],
        lr=plan.lr, betas=(0.9, 0.98),
    )  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, total))
    if plan.locking == "LU":
        for p in model.cell.parameters():
            p.requires_grad_(False)
    ck = ctx.checkpoint
    ck.register(model=model, optimizer=opt, scheduler=sched)
    start_epoch, start_batch, step = 0, 0, 0
    resumed = ck.resume()
    if resumed is not None:
        start_epoch, start_batch, step = resumed.epoch, resumed.batch, resumed.step
    cached = cell_features(model, cell_tokens) if plan.locking == "LU" and plan.cache else None
    pairs = 0
    for epoch in range(start_epoch, plan.epochs):
        gen = np.random.default_rng([plan.seed, epoch])
        order = gen.permutation(n)
        first = start_batch if epoch == start_epoch else 0
        total_loss, seen = 0.0, 0
        for b in range(first, per_epoch):
            idx = torch.as_tensor(
                order[b * plan.batch_size : (b + 1) * plan.batch_size], device=cell_tokens.device
            )
            unlocked = step >= frozen_until
            for p in model.text.parameters():
                p.requires_grad_(unlocked)
            model.train()
            if plan.locking == "LU":
                model.cell.eval()
                feats = (
                    cached[idx] if cached is not None else cell_features(model, cell_tokens[idx])
                )
            else:
                feats = model.cell(cell_tokens[idx])
            with autocast():
                loss = model.loss(feats, text_ids[idx], text_mask[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            pairs += idx.numel()
            total_loss += float(loss.detach()) * idx.numel()
            seen += idx.numel()
            if not ctx.steps_left(step):
                break
            ck.step_done(epoch, b + 1, step)
        phase = "unlocked" if step > frozen_until else "text_frozen"  # not the harness warm-up
        ctx.mark(epoch + 1, phase, loss=total_loss / max(seen, 1), lr=sched.get_last_lr()[0],
                 temperature=float(model.log_scale.detach().exp()))  # fmt: skip
        if not ctx.steps_left(step):
            break
        if epoch + 1 < plan.epochs:
            ck.epoch_done(epoch + 1, step)
    ck.complete(plan.epochs, step)
    return {"steps": float(step), "pairs": float(pairs)}


@torch.no_grad()
def embed(model: Any, cell_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
          batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """L2-normalised cell and text embeddings (eval mode)."""
    model.eval()
    cells = torch.cat([model.cell_head(model.cell(cell_tokens[lo : lo + batch]))
                       for lo in range(0, cell_tokens.shape[0], batch)])  # fmt: skip
    texts = torch.cat([model.text_head(model.text(ids[lo : lo + batch], mask[lo : lo + batch]))
                       for lo in range(0, ids.shape[0], batch)])  # fmt: skip
    return cells, texts
