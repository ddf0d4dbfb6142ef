"""Canonical output hashing: the ``output_hash`` of every run (README "What one run does").

Recipe: outputs in sorted name order; floats cast to float64 and rounded to ``decimals``
(``-0.0`` folded into ``0.0``, every NaN to one bit pattern), integers and booleans to int64;
C-contiguous bytes; name, shape and dtype enter the digest too. Sparse outputs (scipy.sparse
CSR/CSC/COO/…, torch sparse COO/CSR) are hashed in one canonical form: CSR, duplicates
summed, values rounded, explicit zeros dropped, indices sorted, with the shape in the digest —
so the same matrix in any sparse format (or order of entries) hashes the same. First 16 hex
chars of SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp


def is_sparse(value: Any) -> bool:
    """A scipy.sparse matrix/array or a torch sparse tensor."""
    if sp.issparse(value):
        return True
    layout = getattr(value, "layout", None)
    return layout is not None and str(layout) != "torch.strided" and hasattr(value, "detach")


def to_scipy_csr(value: Any) -> sp.csr_matrix:
    """A sparse output as a scipy CSR matrix (torch sparse moved to the host)."""
    if sp.issparse(value):
        return sp.csr_matrix(value)
    t = value.detach().cpu()
    if str(t.layout) == "torch.sparse_csr":
        return sp.csr_matrix(
            (t.values().numpy(), t.col_indices().numpy(), t.crow_indices().numpy()),
            shape=tuple(t.shape),
        )
    t = t.coalesce()
    idx = t.indices().numpy()
    if idx.shape[0] != 2:
        raise TypeError(f"sparse output of {idx.shape[0]} dimensions; only 2-d is hashable")
    return sp.csr_matrix((t.values().numpy(), (idx[0], idx[1])), shape=tuple(t.shape))


def to_numpy(value: Any) -> np.ndarray:
    """A dense torch tensor, numpy array or scalar as a host numpy array."""
    if is_sparse(value):
        raise TypeError("sparse output: use to_scipy_csr / canonical_sparse")
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def host(value: Any) -> Any:
    """An output on the host: numpy for dense values, scipy CSR for sparse ones."""
    return to_scipy_csr(value) if is_sparse(value) else to_numpy(value)


def _canonical_values(arr: np.ndarray, decimals: int) -> np.ndarray:
    if arr.dtype.kind in "biu":
        return np.asarray(arr, dtype=np.int64, order="C")  # (ascontiguousarray makes 0-d 1-d)
    if arr.dtype.kind == "c":
        raise TypeError("complex outputs are not hashable; return real and imaginary parts")
    if arr.dtype.kind != "f":
        raise TypeError(f"cannot hash output of dtype {arr.dtype}")
    # np.round of a 0-d array returns a scalar: keep an ndarray (shape () stays in the digest)
    out = np.asarray(np.round(arr.astype(np.float64), decimals) + 0.0)  # + 0.0: -0.0 → 0.0
    out[np.isnan(out)] = np.nan  # one canonical NaN bit pattern
    return np.asarray(out, order="C")


def canonical_array(value: Any, decimals: int) -> np.ndarray:
    """The canonical form of one dense output: float64 rounded, or int64, C-contiguous."""
    return _canonical_values(to_numpy(value), decimals)


def canonical_sparse(value: Any, decimals: int) -> sp.csr_matrix:
    """The canonical CSR of a sparse output: duplicates summed, values canonical, zeros
    (after rounding) dropped, indices sorted."""
    m = to_scipy_csr(value).copy()
    m.sum_duplicates()
    m.data = _canonical_values(np.asarray(m.data), decimals)
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _update(digest: Any, name: str, value: Any, decimals: int) -> None:
    if is_sparse(value):
        m = canonical_sparse(value, decimals)
        digest.update(f"{name}|csr|{m.shape}|{m.data.dtype.str}|".encode())
        for part in (m.indptr, m.indices):
            digest.update(np.asarray(part, dtype=np.int64).tobytes())
        digest.update(m.data.tobytes())
        return
    arr = canonical_array(value, decimals)
    digest.update(f"{name}|{arr.shape}|{arr.dtype.str}|".encode())
    digest.update(arr.tobytes())


def select(outputs: Mapping[str, Any], patterns: Iterable[str] | None) -> list[str] | None:
    """The output names matching ``patterns`` (exact names or fnmatch globs such as
    ``state.*``); None (all outputs) without patterns. A pattern matching nothing is kept
    as is, so the hash reports it missing."""
    import fnmatch

    if not patterns:
        return None
    names: list[str] = []
    for pat in patterns:
        hits = (
            [n for n in outputs if fnmatch.fnmatchcase(n, pat)]
            if any(c in pat for c in "*?[")
            else [pat]
        )
        names.extend(hits or [pat])
    return sorted(set(names))


def output_hash(
    outputs: Mapping[str, Any], decimals: int = 8, names: Iterable[str] | None = None
) -> str:
    """Hash ``outputs`` (or the subset ``names``) with the canonical recipe; 16 hex chars."""
    selected = sorted(names) if names else sorted(outputs)
    missing = [n for n in selected if n not in outputs]
    if missing:
        raise KeyError(f"hashed outputs missing from the method's outputs: {missing}")
    digest = hashlib.sha256()
    for name in selected:
        _update(digest, name, outputs[name], decimals)
    return digest.hexdigest()[:16]


def parity_hash(value: Any, decimals: int = 8) -> str:
    """The legacy peer recipe ``md5(round(x, d).tobytes())[:16]`` of a float64 array."""
    arr = np.ascontiguousarray(np.round(to_numpy(value).astype(np.float64), decimals))
    return hashlib.md5(arr.tobytes()).hexdigest()[:16]
