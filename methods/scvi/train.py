"""The training loop (editable surface): Adam, KL warm-up, per-epoch history, checkpoints
through the harness's checkpoint object (``ctx.checkpoint``).

Every call trains from a seeded initial state: ``torch.manual_seed(seed)`` then the model is
built on the CPU (identical initial weights on any device) and moved to the device. The
minibatch order of epoch e depends only on (seed, e); dropout and the reparameterisation
noise use the global torch RNG, whose state a checkpoint carries.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from methods.scvi.model import VAE
from methods.scvi.staging import Batch

HISTORY_KEYS = ("elbo_train", "reconstruction_loss_train", "kl_local_train", "kl_weight")


@dataclass(frozen=True)
class Schedule:
    """Step budget and KL warm-up (scvi-tools' TrainingPlan semantics)."""

    max_epochs: int
    max_steps: int | None = None
    n_epochs_kl_warmup: int | None = 400
    n_steps_kl_warmup: int | None = None
    max_kl_weight: float = 1.0
    min_kl_weight: float = 0.0

    def kl_weight(self, epoch: int, step: int) -> float:
        """min + (max − min)·progress, progress = step/n_steps or epoch/n_epochs (capped at 1)."""
        if self.n_steps_kl_warmup is not None:
            progress = step / self.n_steps_kl_warmup
        elif self.n_epochs_kl_warmup is not None:
            progress = epoch / self.n_epochs_kl_warmup
        else:
            return self.max_kl_weight
        span = self.max_kl_weight - self.min_kl_weight
        return self.min_kl_weight + span * min(progress, 1.0)


@dataclass
class TrainResult:
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch
    cells: int = 0  # cells processed by this call (not counting resumed epochs)
    seconds: float = 0.0  # wall time of this call's training epochs
    cpu_seconds: float = 0.0  # process CPU time of the same (all threads; robust to load)
    steps: int = 0
    resumed_epoch: int = 0  # epoch a checkpoint resumed from (0: fresh)

    @property
    def cells_per_s(self) -> float:
        return self.cells / self.seconds if self.seconds > 0 else 0.0


EpochFn = Callable[[int, int], Iterator[Batch]]  # (epoch, start batch) -> minibatches


def make_optimizer(model: VAE, lr: float, eps: float, weight_decay: float) -> torch.optim.Adam:
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # one fused kernel per step (CPU and CUDA, torch >= 2.4); else the foreach loop
        return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, foreach=True)


def train(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    epochs: EpochFn,
    schedule: Schedule,
    ctx: Any,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    log: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    """Train ``model`` for the budget in ``schedule`` (or ``ctx.max_steps`` steps: the
    warm-up), resuming mid-epoch from the harness's checkpoint when one fits.

    History per epoch (means over the epoch's training cells, computed in train mode like
    scvi-tools' ``elbo_train``): ELBO, reconstruction, unweighted local KL, and the KL weight;
    each epoch ends with ``ctx.mark`` (the harness's per-epoch time sample and series).
    """
    result = TrainResult(history={k: [] for k in (*HISTORY_KEYS, "cells_per_s")})
    ck = ctx.checkpoint
    start_epoch, start_batch, step = 0, 0, 0
    device = next(model.parameters()).device
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    n_cells = 0
    resumed = ck.resume()
    if resumed is not None:
        start_epoch, start_batch, step = resumed.epoch, resumed.batch, resumed.step
        result.history = {k: list(v) for k, v in resumed.extra["history"].items()}
        if start_batch:
            sums = resumed.extra["sums"].to(device)
            n_cells = int(resumed.extra["n_cells"])
        result.resumed_epoch = start_epoch

    def extra() -> dict[str, Any]:
        return {"history": result.history, "sums": sums.cpu(), "n_cells": n_cells}

    for epoch in range(start_epoch, schedule.max_epochs):
        if schedule.max_steps is not None and step >= schedule.max_steps:
            break
        if not ctx.steps_left(step):
            break
        model.train()
        kl_w = schedule.kl_weight(epoch, step)
        first = start_batch if epoch == start_epoch else 0
        if not first:
            sums = torch.zeros(2, device=device, dtype=torch.float64)
            n_cells = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i, mb in enumerate(epochs(epoch, first), start=first):
            if schedule.n_steps_kl_warmup is not None:
                kl_w = schedule.kl_weight(epoch, step)
            with autocast():
                out = model(mb.x, mb.batch, mb.log_lib, mb.lgamma_x1, kl_w, nz=mb.nz)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            with torch.no_grad():
                sums += torch.stack([out.reconstruction, out.kl_local]).double()
            n_cells += mb.x.shape[0]
            step += 1
            if schedule.max_steps is not None and step >= schedule.max_steps:
                break
            if not ctx.steps_left(step):
                break
            ck.step_done(epoch, i + 1, step, extra)
        seconds = time.perf_counter() - t0
        result.cpu_seconds += time.process_time() - c0
        rec, kl = (sums / max(n_cells, 1)).tolist()
        for key, value in zip(HISTORY_KEYS, (rec + kl, rec, kl, kl_w), strict=True):
            result.history[key].append(value)
        result.history["cells_per_s"].append(n_cells / seconds if seconds > 0 else 0.0)
        result.cells += n_cells
        result.seconds += seconds
        ctx.mark(epoch + 1, "train", elbo_train=rec + kl, reconstruction=rec, kl_local=kl,
                 kl_weight=kl_w)  # fmt: skip
        if not ctx.steps_left(step):
            break
        done = epoch + 1 == schedule.max_epochs or (
            schedule.max_steps is not None and step >= schedule.max_steps
        )
        if not done:
            n_cells, sums = 0, torch.zeros(2, device=device, dtype=torch.float64)
            ck.epoch_done(epoch + 1, step, extra)
    result.steps = step
    ck.complete(schedule.max_epochs, step, extra)
    return result
