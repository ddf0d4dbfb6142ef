"""Toy method (read-only surface): ``y = 2x`` computed by the editable ``methods/toy/fast.py``
after a sleep the tests control (``knobs.py``); its data are drawn from a seed, so the loop
can time every round on a fresh input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.api import DatasetConfig, MethodConfig
from methods.toy import fast


@dataclass
class ToyConfig(MethodConfig):
    ROLE: ClassVar[str] = "cells"

    dtype: str = "float64"
    # a tunable knob: lower is faster, but below 3 the output is wrong (a planted bad region)
    speed: int = 5


@dataclass
class ToyData(DatasetConfig):
    ROLE: ClassVar[str] = "cells"
    SIZE_KEY: ClassVar[str | None] = "size"

    size: int = 64
    seed: int = 2025


def load(cfg: ToyData) -> dict[str, Any]:
    return {"x": np.random.default_rng(cfg.seed).random(cfg.size)}


class Toy:
    def __init__(self, cfg: ToyConfig, runtime: Any) -> None:
        self.cfg = cfg

    def check_inputs(self, data: dict[str, Any]) -> None:
        pass

    def prepare(self, data: dict[str, Any]) -> np.ndarray:
        return fast.stage(data["x"])

    def run(self, x: np.ndarray, ctx: Any) -> dict[str, np.ndarray]:
        y = fast.compute(x, self.cfg.speed)
        wrong = 1.0 if self.cfg.speed < 3 else 0.0
        return {"y": y + wrong}

    def compare(self, result: Any, reference: Any) -> tuple[dict[str, float], bool]:
        err = float(np.max(np.abs(result.outputs["y"] - reference["y"])))
        return {"max_abs_err": err}, err <= 1e-6

    def quality(self, result: Any, data: Any) -> dict[str, float]:
        return {}
