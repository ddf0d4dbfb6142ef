"""The resolved execution context handed to methods and datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Runtime:
    """Where and how a method runs: resolved from the hardware profile.

    Attributes:
        device: torch device the method must compute on.
        dtype: compute dtype chosen by the hardware profile or the method default.
        compile: whether the method may wrap hot code in ``torch.compile``.
        tf32: whether TF32 matmuls are allowed (CUDA only).
        threads: torch intra-op thread count in force.
        cache_dir: a directory for expensive, deterministic artefacts (e.g. lookup tables).
        seed: the benchmark seed.
    """

    device: torch.device
    dtype: torch.dtype
    compile: bool
    tf32: bool
    threads: int
    cache_dir: Path
    seed: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU)."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
