"""Canonical output hashing: the ``weights_hash`` of DESIGN.md.

Recipe: outputs in sorted name order; floats cast to float64 and rounded to ``decimals``
(``-0.0`` folded into ``0.0``, every NaN to one bit pattern), integers and booleans to int64;
C-contiguous bytes; name, shape and dtype enter the digest too. First 16 hex chars of SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, numpy array or scalar as a host numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def canonical_array(value: Any, decimals: int) -> np.ndarray:
    """The canonical form of one output: float64 rounded, or int64, C-contiguous."""
    arr = to_numpy(value)
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


def weights_hash(
    outputs: Mapping[str, Any], decimals: int = 8, names: Iterable[str] | None = None
) -> str:
    """Hash ``outputs`` (or the subset ``names``) with the canonical recipe; 16 hex chars."""
    selected = sorted(names) if names else sorted(outputs)
    missing = [n for n in selected if n not in outputs]
    if missing:
        raise KeyError(f"hashed outputs missing from the method's outputs: {missing}")
    digest = hashlib.sha256()
    for name in selected:
        arr = canonical_array(outputs[name], decimals)
        digest.update(f"{name}|{arr.shape}|{arr.dtype.str}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:16]


def parity_hash(value: Any, decimals: int = 8) -> str:
    """The legacy peer recipe ``md5(round(x, d).tobytes())[:16]`` of a float64 array."""
    arr = np.ascontiguousarray(np.round(to_numpy(value).astype(np.float64), decimals))
    return hashlib.md5(arr.tobytes()).hexdigest()[:16]
