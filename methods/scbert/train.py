"""Two-stage training and progressive pruning (editable surface).

Stage A: the whole model deterministic (cross-entropy, Adam). Stage B: fc1/fc2 Bayesian,
loss = CE + β·KL with β annealed linearly from 0 to ``kl_weight`` after ``kl_warmup_epochs``
deterministic epochs; log-variances clamped to [−10, 2] after every step; the head at half the
learning rate, gradients clipped at 1.0. Then pruning: fc1 loses its smallest-norm output rows
step by step (``prune_step`` of the ORIGINAL rows per step, up to ``prune_target``), each step
fine-tuned ``prune_epochs`` epochs at half the learning rate; it stops (and keeps the previous
step) when validation macro-F1 falls more than ``prune_tolerance`` below the best.

Epoch e's order depends only on (seed, e). Checkpoints: after every epoch of stages A and B
(Stage A → Stage B passes through one); pruning changes shapes and is not checkpointed.
Every epoch ends with ``ctx.mark`` in its phase: stageA, stageB, prune1, prune2, …
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Plan:
    epochs_a: int
    epochs_b: int
    batch_size: int
    lr: float
    kl_weight: float
    kl_warmup_epochs: int
    prune_step: float
    prune_target: float
    prune_epochs: int
    prune_tolerance: float
    seed: int


@dataclass
class TrainLog:
    sparsity: float = 0.0  # true cumulative fraction of fc1's original rows removed
    pruned_steps: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)


def macro_f1(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (truth == c))
        denom = np.sum(pred == c) + np.sum(truth == c)
        if np.sum(truth == c):
            scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


@torch.no_grad()
def predict(model: Any, tokens: torch.Tensor, batch: int = 128) -> np.ndarray:
    model.eval()
    out = [model(tokens[lo : lo + batch]).argmax(-1) for lo in range(0, tokens.shape[0], batch)]
    model.train()
    return torch.cat(out).cpu().numpy()


def _optimizer(model: Any, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(
        [
            {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": lr},
            {"params": list(model.head.parameters()), "lr": 0.5 * lr},
        ]
    )


def _epoch(
    model: Any, opt: Any, x: torch.Tensor, y: torch.Tensor, plan: Plan, epoch: int,
    kl_w: float, start: int, ctx: Any, step: list[int], on_step: Callable[[int], None],
) -> float:  # fmt: skip
    gen = np.random.default_rng([plan.seed, epoch])
    order = gen.permutation(x.shape[0])
    total, n = 0.0, 0
    n_batches = -(-x.shape[0] // plan.batch_size)
    for b in range(start, n_batches):
        idx = torch.as_tensor(
            order[b * plan.batch_size : (b + 1) * plan.batch_size], device=x.device
        )
        logits = model(x[idx], sample=True)
        loss = F.cross_entropy(logits, y[idx])
        if kl_w > 0:
            loss = loss + kl_w * model.head.kl()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.head.parameters(), 1.0)
        opt.step()
        model.head.clamp_logvar()
        total += float(loss.detach()) * idx.numel()
        n += idx.numel()
        step[0] += 1
        if not ctx.steps_left(step[0]):
            break
        on_step(b + 1)
    return total / max(n, 1)


def train(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: np.ndarray,
    n_classes: int,
    plan: Plan,
    ctx: Any,
    log: Callable[[str], None] = lambda _: None,
) -> TrainLog:
    """Stages A and B, then progressive pruning (module doc)."""
    out = TrainLog()
    opt = _optimizer(model, plan.lr)
    ck = ctx.checkpoint
    ck.register(model=model, optimizer=opt)
    start_epoch, start_batch, step = 0, 0, [0]
    resumed = ck.resume()
    if resumed is not None:
        start_epoch, start_batch, step[0] = resumed.epoch, resumed.batch, resumed.step
    total_ab = plan.epochs_a + plan.epochs_b
    anneal = max(1, plan.epochs_b - plan.kl_warmup_epochs)
    model.train()
    for epoch in range(start_epoch, total_ab):
        stage_b = epoch >= plan.epochs_a
        model.head.set_bayes(stage_b)
        kl_w = 0.0
        if stage_b:
            k = epoch - plan.epochs_a - plan.kl_warmup_epochs + 1
            kl_w = plan.kl_weight * min(1.0, max(0, k) / anneal)
        first = start_batch if epoch == start_epoch else 0
        loss = _epoch(
            model, opt, x, y, plan, epoch, kl_w, first, ctx, step,
            lambda b, e=epoch: ck.step_done(e, b, step[0]),
        )  # fmt: skip
        f1 = macro_f1(predict(model, x_val), y_val, n_classes)
        phase = "stageB" if stage_b else "stageA"
        ctx.mark(epoch + 1, phase, loss=loss, val_macro_f1=f1, kl_weight=kl_w)
        if not ctx.steps_left(step[0]):
            return out
        ck.epoch_done(epoch + 1, step[0])
    ck.complete(total_ab, step[0])
    # ---- pruning -------------------------------------------------------------------------
    original = model.head.fc1.out_features
    best = macro_f1(predict(model, x_val), y_val, n_classes)
    epoch = total_ab
    steps = int(round(plan.prune_target / plan.prune_step)) if plan.prune_step > 0 else 0
    for k in range(1, steps + 1):
        keep_rows = original - int(round(original * min(k * plan.prune_step, plan.prune_target)))
        snapshot = copy.deepcopy(model.head.state_dict())
        shape_before = model.head.fc1.out_features
        model.head.prune_rows(model.head.fc1.out_features - keep_rows)
        opt = _optimizer(model, 0.5 * plan.lr)
        for _ in range(plan.prune_epochs):
            loss = _epoch(
                model, opt, x, y, plan, epoch, plan.kl_weight, 0, ctx, step, lambda b: None
            )
            epoch += 1
            f1 = macro_f1(predict(model, x_val), y_val, n_classes)
            ctx.mark(epoch, f"prune{k}", loss=loss, val_macro_f1=f1,
                     sparsity=1 - model.head.fc1.out_features / original)  # fmt: skip
        log(f"prune step {k}: fc1 rows {shape_before} → {keep_rows}, val macro-F1 {f1:.3f}")
        if f1 < best - plan.prune_tolerance:
            model.head.prune_rows(0)
            _restore(model.head, snapshot)
            break
        best = max(best, f1)
        out.pruned_steps = k
    out.sparsity = 1 - model.head.fc1.out_features / original
    return out


def _restore(head: Any, state: dict) -> None:
    """Load a head state whose fc1/fc2 shapes may be larger than the current ones."""
    with torch.no_grad():
        for name in ("weight_mu", "weight_logvar", "bias"):
            setattr(head.fc1, name, torch.nn.Parameter(state[f"fc1.{name}"].clone()))
        for name in ("weight_mu", "weight_logvar"):
            setattr(head.fc2, name, torch.nn.Parameter(state[f"fc2.{name}"].clone()))
    head.load_state_dict(state)
