"""Method-agnostic AnnData helpers: reading user files, validating count matrices, shipped data.

Every problem with a user's data raises :class:`~harness.errors.UserError` with one line that
names the culprit (config key, file, layer). ``anndata`` is imported inside the functions so that
importing this module stays cheap; scanpy is never imported.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from harness.core.errors import UserError

if TYPE_CHECKING:
    from anndata import AnnData

PBMC68K_FILE = os.path.join("datasets", "10x_pbmc68k_reduced.h5ad")
_CHUNK = 1 << 22  # elements checked at a time (bounds the temporary memory of counts checks)


def resolve_user_path(path: str) -> str:
    """A user's file path: ``~`` expanded; relative paths are taken from the directory the
    harness was launched in (Hydra may have changed the working directory)."""
    path = os.path.expanduser(str(path))
    if os.path.isabs(path):
        return path
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            return os.path.join(get_original_cwd(), path)
    except ImportError:
        pass
    return os.path.abspath(path)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def read_h5ad(path: str, key: str) -> AnnData:
    """Read an h5ad file fully into memory; ``key`` (e.g. ``dataset.spatial``) names it in errors."""
    import anndata

    path = str(path)
    if not os.path.exists(path):
        raise UserError(f"{key}: file not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"{key}: {path} is a directory, not an h5ad file")
    try:
        with warnings.catch_warnings():
            # old-format notices (e.g. scanpy's shipped file) are not the user's problem
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return anndata.read_h5ad(path)
    except Exception as e:  # h5py OSError, KeyError for a non-AnnData HDF5 file, ...
        raise UserError(
            f"{key}: {path} is not an h5ad file or cannot be read ({type(e).__name__}: "
            f"{_one_line(e)[:160]})"
        ) from None


def _flat_values(m: Any) -> np.ndarray:
    """The stored values of a matrix: ``.data`` for sparse (zeros are fine), all entries else."""
    if sp.issparse(m):
        if not hasattr(m, "data") or m.format not in ("csr", "csc", "coo", "bsr", "dia"):
            m = m.tocsr()
        return np.asarray(m.data).reshape(-1)
    return np.asarray(m).reshape(-1)


def counts_matrix(adata: AnnData, layer: str | None, where: str) -> Any:
    """Return ``adata.X`` (``layer=None``) or ``adata.layers[layer]``, checked to hold raw counts.

    Raises UserError (naming ``where``, e.g. ``dataset.reference``) if the layer is missing or the
    values are not numeric, not finite, negative or not integers. Sparse matrices are checked on
    their stored values only, in chunks, so the check costs one pass without large temporaries.
    """
    label = f"{where} (layer '{layer}')" if layer is not None else f"{where} (X)"
    if layer is None:
        m = adata.X
        if m is None:
            raise UserError(f"{label}: X is empty; name the layer that holds the counts")
    else:
        if layer not in adata.layers:
            have = list(adata.layers.keys())
            raise UserError(f"{label}: no such layer (layers: {have or 'none'})")
        m = adata.layers[layer]
    values = _flat_values(m)
    dtype = values.dtype
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number):
        raise UserError(f"{label}: dtype {dtype} is not numeric; expected raw integer counts")
    if np.issubdtype(dtype, np.complexfloating):
        raise UserError(f"{label}: dtype {dtype} is complex; expected raw integer counts")
    is_float = np.issubdtype(dtype, np.floating)
    signed = is_float or np.issubdtype(dtype, np.signedinteger)
    for start in range(0, values.size, _CHUNK):
        chunk = values[start : start + _CHUNK]
        if is_float and not np.isfinite(chunk).all():
            n_bad = int(np.count_nonzero(~np.isfinite(values)))
            raise UserError(f"{label}: {n_bad} NaN/inf values; expected raw integer counts")
        if signed and chunk.size and chunk.min() < 0:
            n_bad = int(np.count_nonzero(values < 0))
            raise UserError(
                f"{label}: {n_bad} negative values (min {values.min():g}); "
                "expected raw integer counts"
            )
        if is_float:
            frac = chunk != np.rint(chunk)
            if frac.any():
                example = chunk[np.argmax(frac)]
                n_bad = int(np.count_nonzero(values != np.rint(values)))
                raise UserError(
                    f"{label}: {n_bad} non-integer values (e.g. {example:g}); expected raw "
                    "integer counts, not normalised or log-transformed data"
                )
    return m


def pbmc68k_path() -> str:
    """Path of scanpy's shipped ``10x_pbmc68k_reduced.h5ad`` (found without importing scanpy)."""
    spec = importlib.util.find_spec("scanpy")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = os.path.join(root, PBMC68K_FILE)
        if os.path.isfile(path):
            return path
    raise UserError(f"dataset: scanpy's shipped {PBMC68K_FILE} not found (is scanpy installed?)")


@functools.lru_cache(maxsize=1)
def _pbmc68k_counts_cached() -> AnnData:
    import anndata

    src = read_h5ad(pbmc68k_path(), "dataset")
    raw = src.raw
    logn = sp.csr_matrix(raw.X, dtype=np.float64)
    logn.sort_indices()
    size = src.obs["n_counts"].to_numpy(dtype=np.float64) / 1e4
    rows = np.repeat(np.arange(logn.shape[0]), np.diff(logn.indptr))
    # raw.X = log1p(counts / n_counts * 1e4), stored to 3 decimals: the recovered values lie
    # within ~1e-3 (relative) of integers, so rounding is exact.
    counts = np.rint(np.expm1(logn.data) * size[rows]).astype(np.int32)
    x = sp.csr_matrix((counts, logn.indices, logn.indptr), shape=logn.shape)
    x.eliminate_zeros()
    out = anndata.AnnData(X=x, obs=src.obs.copy(), var=raw.var.copy())
    out.uns["source"] = "scanpy 10x_pbmc68k_reduced: counts = round(expm1(raw.X) * n_counts / 1e4)"
    return out


def pbmc68k_counts() -> AnnData:
    """Scanpy's shipped PBMC 68k subset (700 cells × 765 genes) with integer counts recovered.

    X is CSR int32 ``round(expm1(raw.X) * obs['n_counts'] / 1e4)``; var is ``raw.var`` (gene
    symbols); obs is kept (``bulk_labels`` holds 10 cell types). Returns a fresh copy each call.
    """
    return _pbmc68k_counts_cached().copy()
