"""The training loop (editable surface): Adam, KL warm-up, per-epoch history, checkpoints.

Every call trains from a seeded initial state: ``torch.manual_seed(seed)`` then the model is
built on the CPU (identical initial weights on any device) and moved to the device. The
minibatch order of epoch e depends only on (seed, e); dropout and the reparameterisation
noise use the global torch RNG, whose state a checkpoint carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.checkpoint import Checkpointer
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
    n_train: int,
    schedule: Schedule,
    checkpointer: Checkpointer,
    checkpoint_every: int,
    synchronize: Callable[[], None],
    log: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    """Train ``model`` for the budget in ``schedule``, resuming from a checkpoint if one fits.

    History per epoch (means over the epoch's training cells, computed in train mode like
    scvi-tools' ``elbo_train``): ELBO, reconstruction, unweighted local KL, and the KL weight.
    The checkpoint is removed when training completes.
    """
    result = TrainResult(history={k: [] for k in (*HISTORY_KEYS, "cells_per_s")})
    objects: dict[str, Any] = {"model": model, "optimizer": optimizer}
    start_epoch, step = 0, 0
    state = checkpointer.load()
    if state is not None:
        state.restore(objects)
        start_epoch, step = state.epoch, state.step
        result.history = {k: list(v) for k, v in state.extra["history"].items()}
        result.resumed_epoch = start_epoch
    device = next(model.parameters()).device
    for epoch in range(start_epoch, schedule.max_epochs):
        if schedule.max_steps is not None and step >= schedule.max_steps:
            break
        model.train()
        kl_w = schedule.kl_weight(epoch, step)
        sums = torch.zeros(2, device=device, dtype=torch.float64)
        n_cells = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for mb in epochs(epoch, 0):
            if schedule.n_steps_kl_warmup is not None:
                kl_w = schedule.kl_weight(epoch, step)
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
        synchronize()
        seconds = time.perf_counter() - t0
        result.cpu_seconds += time.process_time() - c0
        rec, kl = (sums / max(n_cells, 1)).tolist()
        for key, value in zip(HISTORY_KEYS, (rec + kl, rec, kl, kl_w), strict=True):
            result.history[key].append(value)
        result.history["cells_per_s"].append(n_cells / seconds if seconds > 0 else 0.0)
        result.cells += n_cells
        result.seconds += seconds
        log(f"epoch {epoch + 1}/{schedule.max_epochs}: elbo {rec + kl:.4f}, kl_weight {kl_w:.4g}")
        done = epoch + 1 == schedule.max_epochs or (
            schedule.max_steps is not None and step >= schedule.max_steps
        )
        if not done and (epoch + 1) % checkpoint_every == 0:
            checkpointer.save(
                step=step,
                epoch=epoch + 1,
                objects=objects,
                loader={"epoch": epoch + 1, "batch": 0},
                extra={"history": result.history},
            )
    result.steps = step
    checkpointer.clear()
    return result
