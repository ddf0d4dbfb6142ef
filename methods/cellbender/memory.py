"""CellBender's posterior batch from the memory there is (read-only surface; #23 item 4).

The noise-count posterior (methods/cellbender/posterior.py, step 2) walks the called cells in
batches. A batch of B cells with E nonzero counts, G modelled genes, S draws, a window of W
noise counts and the compute dtype's ``itemsize`` f holds at most:

- per cell, the dense (B, G) tensors of one guide draw replayed through the model: the counts,
  the encoder's normalised and log inputs and its BatchNorm output, the decoder's logits,
  log-softmax and χ, then μ, the background parts and λ (about 11, with temporaries): 12 G f;
- per nonzero count, its row and column (int64: 16) and count, the S draws' (μ, λ) kept until
  the window is known (2 S f), then the window's (E, W) arrays alive at once while a draw's
  log-probabilities are computed and summed (the noise counts, the running sum, a draw's
  softmax and ~6 temporaries of the NB and Poisson terms, the validity mask): 10 W f + W.

    bytes(B) = B * 12 G f + E(B) * (24 + 2 S f + 11 W f)

with E(B) ≤ B × the most nonzero counts of any called cell (the bound used). What the pass
keeps grows with all the cells' counts, not with the batch: per count ~13 bytes and its span of
at most W log-probabilities (f each), held twice while the batches' parts are joined:

    kept(E_all) = 2 E_all (13 + W f)

The budget is ``FRACTION`` (1/2) of the free memory — CUDA's ``mem_get_info`` on a GPU
(the kept posterior lives on the host there), ``MemAvailable`` on a CPU less the kept bound —
or ``method.memory_gb`` as given. The batch is the most cells that fit, at most ``cap`` (the
method's 128, upstream's batch) and at least 1: the posterior draws' random stream follows the
batch, so a machine with room to spare computes the same posterior as any other, and one short
of memory a smaller batch instead of failing (tests/test_cellbender_memory.py measures the
peak of a batch against ``batch_bytes``).
"""

from __future__ import annotations

import os

import torch

FRACTION = 0.5  # of the free memory: the rest stays for the caller's arrays and the allocator
CAP = 128  # upstream's posterior batch (cellbender.md, "Defaults")


def cell_bytes(n_genes: int, itemsize: int) -> int:
    """Bytes of the dense per-cell tensors of a batch (module doc)."""
    return 12 * n_genes * itemsize


def entry_bytes(n_samples: int, window: int, itemsize: int) -> int:
    """Bytes per nonzero count of a batch (module doc)."""
    return 24 + 2 * n_samples * itemsize + 11 * window * itemsize


def batch_bytes(
    cells: int, entries: int, n_genes: int, n_samples: int, window: int, itemsize: int
) -> int:
    """The most a batch of ``cells`` cells with ``entries`` nonzero counts holds."""
    return cells * cell_bytes(n_genes, itemsize) + entries * entry_bytes(
        n_samples, window, itemsize
    )


def kept_bytes(entries: int, window: int, itemsize: int) -> int:
    """An upper bound on what the pass keeps of ``entries`` counts (module doc)."""
    return 2 * entries * (13 + window * itemsize)


def free_bytes(device: torch.device, cap_gb: float | None = None) -> int:
    """The memory the posterior may use: ``cap_gb`` if given, else the device's free memory."""
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


def auto_batch(
    n_cells: int,
    n_genes: int,
    max_entries: int,
    n_samples: int,
    window: int,
    itemsize: int,
    budget: int,
    kept: int = 0,
    cap: int = CAP,
    fraction: float = FRACTION,
) -> int:
    """The most cells per batch (at most ``cap`` and ``n_cells``, at least 1) whose footprint,
    each cell with ``max_entries`` nonzero counts, fits ``fraction`` of ``budget`` less
    ``kept`` (what the pass keeps, where it shares that memory)."""
    per_cell = cell_bytes(n_genes, itemsize) + max_entries * entry_bytes(
        n_samples, window, itemsize
    )
    fits = int((fraction * budget - kept) // max(per_cell, 1))
    return max(1, min(cap, max(n_cells, 1), fits))
