"""scBERT's tokens (read-only surface): counts → normalize_total(1e4) → log2(1 + x) → bins.

Token t = min(floor(v), bin_num) with bin_num = 5 by default: values below 1 (below ~1 count
per 10k) share token 0 with true zeros, as upstream. A trailing token 0 is appended, so a
sequence is G + 1 tokens; ``n_tokens`` = bin_num + 2 (the last id is upstream's [MASK]/[PAD]).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def log_normalise(counts: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Dense log2(1 + 1e4 · x / Σx) per cell (float32)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    total = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(1e4, total, out=np.zeros_like(total), where=total > 0)
    x = sp.diags(scale) @ x
    return np.log2(1.0 + x.toarray()).astype(np.float32)


def tokens(values: np.ndarray, bin_num: int) -> np.ndarray:
    """(cells, G + 1) int64 tokens: binned values and the appended token 0."""
    t = np.minimum(np.floor(values), bin_num).astype(np.int64)
    return np.concatenate([t, np.zeros((t.shape[0], 1), dtype=np.int64)], axis=1)
