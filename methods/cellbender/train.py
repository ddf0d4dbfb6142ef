"""Training (editable surface): minibatches with 20% empty droplets, ClippedAdam, OneCycle,
a test ELBO every ``test_every`` epochs, checkpoints through the harness's object.

ClippedAdam (as Pyro's): every gradient element is clamped to ±``clip_norm`` before an Adam
step. OneCycleLR peaks at 10 × ``lr``; its total is batches per epoch × epochs. Epoch e's
order depends only on (seed, e), so a loader position is (epoch, batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Staged:
    """The analysed droplets on the device (dense, or CSR on the host) and per-droplet
    constants."""

    x: torch.Tensor | None  # (N, G) dense counts, or None with ``csr``
    csr: Any  # scipy CSR (N, G) when not dense
    lgamma_x1: torch.Tensor  # (N,) Σ_g lgamma(x + 1)
    prior_logit: torch.Tensor  # (N,)
    device: torch.device
    dtype: torch.dtype

    def rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(idx, device=self.device)
        if self.x is not None:
            x = self.x.index_select(0, ids)
        else:
            x = torch.as_tensor(self.csr[idx].toarray(), dtype=self.dtype, device=self.device)
        return x, self.lgamma_x1.index_select(0, ids), self.prior_logit.index_select(0, ids)


@dataclass(frozen=True)
class BatchPlan:
    """Training minibatches: the non-empty training droplets in a per-epoch shuffled order,
    each batch topped up with ``empty_fraction`` surely-empty training droplets."""

    cells: np.ndarray  # training droplets above the surely-empty threshold
    empties: np.ndarray  # training droplets below it
    batch_size: int
    empty_fraction: float
    seed: int

    @property
    def n_main(self) -> int:
        if self.empties.size == 0:
            return self.batch_size
        return max(1, round(self.batch_size * (1 - self.empty_fraction)))

    @property
    def batches(self) -> int:
        return max(1, math.ceil(self.cells.size / self.n_main))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[np.ndarray]:
        gen = np.random.default_rng([self.seed, epoch])
        order = self.cells[gen.permutation(self.cells.size)]
        empties = self.empties[gen.permutation(self.empties.size)] if self.empties.size else None
        n_empty = self.batch_size - self.n_main
        for b in range(start, self.batches):
            main = order[b * self.n_main : (b + 1) * self.n_main]
            if empties is not None and n_empty > 0:
                take = np.arange(b * n_empty, (b + 1) * n_empty) % empties.size
                main = np.concatenate([main, empties[take]])
            if main.size >= 4:  # BatchNorm needs a few droplets
                yield main


class ClippedAdam(torch.optim.Adam):
    """Adam with every gradient element clamped to ±clip_norm first (Pyro's ClippedAdam)."""

    def __init__(self, params: Any, lr: float, clip_norm: float = 10.0, **kw: Any) -> None:
        super().__init__(params, lr=lr, **kw)
        self.clip_norm = clip_norm

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads:  # one multi-tensor clamp: the same elementwise min/max as clamp_ per tensor
            torch._foreach_clamp_min_(grads, -self.clip_norm)
            torch._foreach_clamp_max_(grads, self.clip_norm)
        return super().step(closure)


def make_optimizer(model: torch.nn.Module, lr: float, total_steps: int) -> tuple[Any, Any]:
    """ClippedAdam (torch's fused kernel: one pass per parameter for the whole Adam update)
    and its OneCycle schedule (max lr 10 × lr)."""
    opt = ClippedAdam(model.parameters(), lr=lr, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=10 * lr, total_steps=total_steps)
    return opt, sched


def test_elbo(model: Any, staged: Staged, test: np.ndarray, n_total: int, seed: int) -> float:
    """Mean ELBO per droplet of the test droplets (eval mode, one seeded guide draw)."""
    model.eval()
    gen = torch.Generator(device=staged.device).manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for lo in range(0, test.size, 512):
            x, lg, prior = staged.rows(test[lo : lo + 512])
            total += float(model.loss(x, lg, prior, n_total, gen).elbo)
    model.train()
    return total / max(test.size, 1)


def train(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    staged: Staged,
    plan: BatchPlan,
    test: np.ndarray,
    epochs: int,
    test_every: int,
    ctx: Any,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, list[float]]:
    """Train for ``epochs`` (or ``ctx.max_steps`` steps), resuming mid-epoch from the
    harness's checkpoint when one fits; returns the learning curve."""
    n_total = int(plan.cells.size + plan.empties.size)
    curve: dict[str, list[float]] = {"elbo_train": [], "elbo_test": [], "test_epoch": []}
    ck = ctx.checkpoint
    start_epoch, start_batch, step = 0, 0, 0
    sums = [0.0, 0]
    resumed = ck.resume()
    if resumed is not None:
        start_epoch, start_batch, step = resumed.epoch, resumed.batch, resumed.step
        curve = {k: list(v) for k, v in resumed.extra["curve"].items()}
        sums = [float(resumed.extra["sum"]), int(resumed.extra["n"])]

    def extra() -> dict[str, Any]:
        return {"curve": curve, "sum": sums[0], "n": sums[1]}

    model.train()
    for epoch in range(start_epoch, epochs):
        if not ctx.steps_left(step):
            break
        first = start_batch if epoch == start_epoch else 0
        if not first:
            sums = [0.0, 0]
        for b, idx in enumerate(plan.epoch(epoch, first), start=first):
            x, lg, prior = staged.rows(idx)
            terms = model.loss(x, lg, prior, n_total)
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            optimizer.step()
            scheduler.step()
            sums[0] += float(terms.elbo)
            sums[1] += idx.size
            step += 1
            if not ctx.steps_left(step):
                break
            ck.step_done(epoch, b + 1, step, extra)
        curve["elbo_train"].append(sums[0] / max(sums[1], 1))
        metrics = {"elbo_train": curve["elbo_train"][-1], "lr": scheduler.get_last_lr()[0]}
        if (epoch + 1) % test_every == 0 or epoch + 1 == epochs:
            curve["elbo_test"].append(test_elbo(model, staged, test, n_total, plan.seed + epoch))
            curve["test_epoch"].append(float(epoch + 1))
            metrics["elbo_test"] = curve["elbo_test"][-1]
        ctx.mark(epoch + 1, "train", **metrics)
        if not ctx.steps_left(step):
            break
        if epoch + 1 < epochs:
            ck.epoch_done(epoch + 1, step, extra)
    ck.complete(epochs, step, extra)
    return curve
