"""Cell-type profiles from reference counts (timed; editable surface)."""

from __future__ import annotations

import torch


def cell_type_profiles(counts: torch.Tensor, codes: torch.Tensor, n_types: int) -> torch.Tensor:
    """P[g, k]: mean over the cells of type k of each cell's counts divided by its UMI total.

    Args:
        counts: (cells, genes) raw counts, dense, in the compute dtype.
        codes: (cells,) int64 type index of each cell in ``[0, n_types)``.
        n_types: number of cell types K.

    Returns:
        (genes, K) profiles; each column sums to 1 over all genes.
    """
    umi = counts.sum(dim=1, keepdim=True)
    normalised = counts / umi
    sums = torch.zeros(n_types, counts.shape[1], dtype=counts.dtype, device=counts.device)
    sums.index_add_(0, codes, normalised)
    n_cells = torch.bincount(codes, minlength=n_types).to(counts.dtype)
    return (sums / n_cells[:, None]).T.contiguous()
