"""What every method's glue repeats, written once (exported by ``harness.api``)."""

from __future__ import annotations

import random
import sys


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), NumPy's global generator (``seed mod 2**32``)
    and ``random`` — a model built after this call is the same for the same seed."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def log(name: str, message: str) -> None:
    """A method's progress line, ``<name>: <message>`` on stderr, flushed (stdout carries the
    harness's own lines and summary)."""
    print(f"{name}: {message}", file=sys.stderr, flush=True)
