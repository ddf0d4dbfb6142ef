"""Toy trainer (read-only surface): y = X w + b learned by minibatch SGD in the editable
``fit.py``; ``prepare`` stages the data with the editable ``stage.py``. The glue counts the
work with the harness's hooks (optimizer steps, gradients accumulated, parameters moved,
training samples) and hands the editable code ``ctx.view()`` only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from harness.api import DatasetConfig, MethodConfig, RunResult, rng
from methods.toyfit import fit, stage


@dataclass
class FitData(DatasetConfig):
    ROLE: ClassVar[str] = "cells"
    SIZE_KEY: ClassVar[str | None] = "n"

    n: int = field(default=384, metadata=rng(ge=8))
    d: int = field(default=8, metadata=rng(ge=2))
    seed: int = 11


def load(cfg: FitData) -> dict[str, Any]:
    gen = np.random.default_rng(cfg.seed)
    x = gen.normal(size=(cfg.n, cfg.d)).astype(np.float32)
    w = gen.normal(size=cfg.d).astype(np.float32)
    y = x @ w + 0.3 + 0.01 * gen.normal(size=cfg.n).astype(np.float32)
    return {"x": x, "y": y}


@dataclass
class FitConfig(MethodConfig):
    ROLE: ClassVar[str] = "cells"
    TIMING: ClassVar[str] = "train"
    DETERMINISM: ClassVar[str] = "statistical"

    dtype: str = "float32"
    epochs: int = field(default=4, metadata=rng(ge=1))
    batch_size: int = field(default=32, metadata=rng(ge=1))
    lr: float = field(default=0.05, metadata=rng(gt=0))
    sleep_s: float = field(default=0.002, metadata=rng(ge=0))  # per step: a measurable run
    seed: int = 0


class ToyFit:
    def __init__(self, cfg: FitConfig, runtime: Any) -> None:
        self.cfg = cfg

    def check_inputs(self, data: dict[str, Any]) -> None:
        pass

    def prepare(self, data: dict[str, Any]) -> Any:
        return stage.stage(data["x"], data["y"])

    def run(self, state: Any, ctx: Any) -> RunResult:
        c = self.cfg
        torch.manual_seed(c.seed)
        model = torch.nn.Linear(state.x.shape[1], 1)
        opt = torch.optim.SGD(model.parameters(), lr=c.lr)
        ctx.work.watch_optimizers()
        ctx.work.watch_forward(model, "samples")
        ctx.work.watch_gradients(model)
        ctx.work.watch_parameters(model)
        fit.fit(model, opt, state, c.epochs, c.batch_size, c.seed, c.sleep_s, ctx.view())
        return RunResult(
            outputs={
                "weight": model.weight.detach().reshape(-1).clone(),
                "bias": model.bias.detach().clone(),
            }
        )

    def compare(self, result: RunResult, reference: Any) -> tuple[dict[str, float], bool]:
        err = max(
            float(np.max(np.abs(np.asarray(result.outputs[k]) - np.asarray(reference[k]))))
            for k in ("weight", "bias")
        )
        return {"max_abs_err": err}, err <= 1e-4

    def quality(self, result: RunResult, data: Any) -> dict[str, float]:
        return {}
