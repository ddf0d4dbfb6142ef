"""Cell-type profiles from reference counts (timed; editable surface)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
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


def cell_type_profiles_sparse(
    counts: sp.csr_matrix, codes: np.ndarray, n_types: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`cell_type_profiles` from a sparse (cells, genes) CSR matrix, never densified: the
    same per-element division and the same per-(type, gene) summation order (cells in order),
    so the result equals the dense computation bit for bit."""
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype  # the compute dtype's arithmetic
    umi = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel().astype(np_dtype)
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    vals = np.asarray(counts.data, dtype=np_dtype) / umi[rows]
    sums = np.zeros((n_types, counts.shape[1]), dtype=np_dtype)
    np.add.at(sums, (codes[rows], counts.indices), vals)
    n_cells = np.bincount(codes, minlength=n_types).astype(np_dtype)
    return torch.as_tensor((sums / n_cells[:, None]).T.copy(), device=device).contiguous()
