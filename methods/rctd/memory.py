"""``batch_size=auto``: pixels per solver batch from the memory the device has free.

The per-pixel footprint of a full-mode solver batch (methods/rctd/solver.py), G regression
genes, K types, counts densified in float64 (8 bytes) and the solver's dtype of ``itemsize``:

- the batch's dense counts row (8 G), while its flat row offsets are computed (clip, cast,
  scale: at most two G-long temporaries of 8 bytes alive at once), then the row offsets
  (int64, 8 G) and the compacted copy ``take`` makes of them when problems converge (8 G):
  at most 24 G bytes per pixel at any moment;
- the per-problem K-sized state (weights, gradient, Hessian, its eigen-decomposition and the
  QP's matrices): ~16 K² + 64 K values.

Independent of the batch: the spline pass's tile working set (``tile_elems`` (rows x genes)
elements; per element the lookup indices and flat offsets (int64) and ~8 values), held once.

    bytes(batch) = batch * (24 G + (16 K² + 64 K) * itemsize) + tile_elems * (24 + 8 * itemsize)

The budget is ``fraction`` (default 1/2) of the free memory: CUDA's ``mem_get_info`` on a GPU,
``MemAvailable`` on a CPU, or an explicit cap (``method.memory_gb``; it is how the CPU tests
check the model: tests/methods/rctd/test_rctd_memory.py measures the peak RSS of a batch against it).
"""

from __future__ import annotations

import os

import torch

FRACTION = 0.5  # of the free memory: the rest stays for the caller's arrays and the allocator


def row_bytes(n_genes: int, n_types: int, itemsize: int) -> int:
    """Bytes one pixel of a solver batch holds at most (module doc)."""
    return 24 * n_genes + (16 * n_types * n_types + 64 * n_types) * itemsize


def fixed_bytes(tile_elems: int, itemsize: int) -> int:
    """Bytes of the spline pass's tile working set (one per batch, any batch size)."""
    return tile_elems * (24 + 8 * itemsize)


def free_bytes(device: torch.device, cap_gb: float | None = None) -> int:
    """The memory a batch may use: ``cap_gb`` if given, else the device's free memory."""
    if cap_gb is not None:
        return int(cap_gb * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_batch_size(
    n_rows: int,
    n_genes: int,
    n_types: int,
    itemsize: int,
    tile_elems: int,
    budget: int,
    fraction: float = FRACTION,
) -> int:
    """The largest batch (at most ``n_rows``, at least 1) whose footprint fits the budget."""
    room = fraction * budget - fixed_bytes(tile_elems, itemsize)
    fits = int(room // row_bytes(n_genes, n_types, itemsize))
    return max(1, min(max(n_rows, 1), fits))
