"""Toy method: sleeps SLEEP_S, returns a fixed array shifted by OFFSET (read-only surface)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.api import DatasetConfig, MethodConfig
from methods.toy import knobs


@dataclass
class ToyConfig(MethodConfig):
    ROLE: ClassVar[str] = "cells"

    dtype: str = "float64"
    # a tunable knob: lower is faster, but below 3 the output is wrong (a planted bad region)
    speed: int = 5


@dataclass
class ToyData(DatasetConfig):
    ROLE: ClassVar[str] = "cells"

    size: int = 16


def load(cfg: ToyData) -> dict[str, Any]:
    return {"x": np.linspace(0.0, 1.0, cfg.size)}


class Toy:
    def __init__(self, cfg: ToyConfig, runtime: Any) -> None:
        self.cfg = cfg

    def check_inputs(self, data: dict[str, Any]) -> None:
        pass

    def prepare(self, data: dict[str, Any]) -> np.ndarray:
        return data["x"]

    def run(self, x: np.ndarray, ctx: Any) -> dict[str, np.ndarray]:
        if knobs.CRASH:
            raise RuntimeError("planted crash")
        time.sleep(3600 if knobs.HANG else knobs.SLEEP_S * self.cfg.speed / 5)
        wrong = 1.0 if self.cfg.speed < 3 else 0.0
        return {"y": x * 2.0 + knobs.OFFSET + wrong}

    def compare(self, result: Any, reference: Any) -> tuple[dict[str, float], bool]:
        err = float(np.max(np.abs(result.outputs["y"] - reference["y"])))
        return {"max_abs_err": err}, err <= 1e-6

    def quality(self, result: Any, data: Any) -> dict[str, float]:
        return {}
