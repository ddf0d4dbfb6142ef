"""The toy method's computation (editable surface): the red-team tests replace it with cheats."""

import time

import numpy as np

from methods.toy import knobs


def compute(x: np.ndarray, speed: int) -> np.ndarray:
    if knobs.CRASH:
        raise RuntimeError("planted crash")
    time.sleep(3600 if knobs.HANG else knobs.SLEEP_S * speed / 5)
    return x * 2.0 + knobs.OFFSET


def stage(x: np.ndarray) -> np.ndarray:
    """Called by ``prepare`` (untimed in a plain benchmark, timed by the loop's judge)."""
    return x
