"""Resolve a hardware profile into a Runtime; refuse a profile this machine cannot honour."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from harness.bench.runtime import Runtime
from harness.config.schema import HardwareConfig
from harness.core.errors import UserError

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(hw: HardwareConfig) -> torch.device:
    """The torch device for ``hw``: checks that CUDA and the expected GPU are really there."""
    if hw.device == "cpu":
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if hw.device == "auto" and not has_cuda:
        if hw.gpu_pattern:
            raise UserError(
                f"hardware={hw.name}: expects a GPU matching '{hw.gpu_pattern}' but CUDA is not available"
            )
        return torch.device("cpu")
    if not has_cuda:
        raise UserError(f"hardware={hw.name}: needs CUDA but no CUDA device is available here")
    device = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name(device)
    if hw.gpu_pattern and not re.search(hw.gpu_pattern, name, flags=re.IGNORECASE):
        raise UserError(
            f"hardware={hw.name}: expects a GPU matching '{hw.gpu_pattern}' but found '{name}'"
        )
    return device


def resolve(
    hw: HardwareConfig,
    method_dtype: str,
    cache_dir: Path,
    seed: int,
    autocast: str | None = None,
) -> Runtime:
    """Apply the profile (threads, TF32) and return the Runtime a method runs with.

    ``autocast`` is the validated choice (``harness.config.validate.autocast_choice``)."""
    device = resolve_device(hw)
    from harness.bench.threads import apply_budget

    pools = apply_budget(hw.threads)
    dtype_name = method_dtype if hw.dtype == "auto" else hw.dtype
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = hw.tf32
        torch.backends.cudnn.allow_tf32 = hw.tf32
    return Runtime(
        device=device,
        dtype=_DTYPES[dtype_name],
        compile=hw.compile,
        tf32=hw.tf32 and device.type == "cuda",
        threads=torch.get_num_threads(),
        cache_dir=cache_dir,
        seed=seed,
        autocast=autocast,
        pools=tuple(sorted(pools.items())),
    )
