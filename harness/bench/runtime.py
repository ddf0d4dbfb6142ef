"""The resolved execution context handed to methods and datasets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        autocast: ``bf16`` / ``fp16`` autocast chosen for this run (None: off); methods that
            declare support wrap their forward passes in :meth:`autocast_context`.
        pools: the size of every thread pool in force (``harness.bench.threads``).
    """

    device: torch.device
    dtype: torch.dtype
    compile: bool
    tf32: bool
    threads: int
    cache_dir: Path
    seed: int = 0
    autocast: str | None = None
    pools: tuple[tuple[str, int], ...] = ()

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @contextlib.contextmanager
    def autocast_context(self) -> Iterator[None]:
        """``torch.autocast`` on this device with the chosen precision (a no-op when off)."""
        if self.autocast is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=_AUTOCAST[self.autocast]):
            yield

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU)."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
