"""Baselines (hash, outputs and work counters in one npz) and the verdict tiers
exact → close → wrong."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from harness.bench.hashing import host, is_sparse
from harness.core.fsio import atomic_write

_SPARSE = ("data", "indices", "indptr", "shape")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def short_hash(payload: Any) -> str:
    """8 hex chars of a JSON-serialisable payload (stable key order)."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


@dataclass(frozen=True)
class BaselineKey:
    method: str
    method_params: str  # short hash of the method's task-defining keys
    dataset: str
    dataset_params: str  # short hash of the dataset's resolved config
    hardware: str
    environment: str  # short hash of environment_key()

    def path(self, root: Path) -> Path:
        name = f"{_slug(self.dataset)}-{self.dataset_params}__{_slug(self.hardware)}-{self.environment}"
        return root / f"{_slug(self.method)}-{self.method_params}" / f"{name}.npz"


@dataclass
class Baseline:
    output_hash: str
    outputs: dict[str, Any]  # numpy arrays, scipy CSR for sparse outputs
    meta: dict[str, Any]
    work: dict[str, float] = field(default_factory=dict)


def _arrays(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        if is_sparse(value):
            m = sp.csr_matrix(host(value))
            parts = (m.data, m.indices, m.indptr, np.asarray(m.shape, dtype=np.int64))
            for part, arr in zip(_SPARSE, parts, strict=True):
                arrays[f"csr__{part}__{name}"] = np.asarray(arr)
        else:
            arrays[f"out__{name}"] = host(value)
    return arrays


def save(
    path: Path,
    output_hash: str,
    outputs: Mapping[str, Any],
    meta: dict[str, Any],
    work: Mapping[str, float] | None = None,
) -> None:
    """Write the baseline atomically (temp file + rename): never a half-written npz."""
    header = json.dumps({"output_hash": output_hash, "work": dict(work or {}), **meta}, default=str)
    arrays = _arrays(outputs)
    atomic_write(path, lambda fh: np.savez(fh, __meta__=np.array(header), **arrays))


class Malformed(ValueError):
    """An outputs file that is not what a worker of this harness writes."""


def _validate(npz: Any) -> None:
    """Raw outputs only: numeric arrays under the known prefixes, well-formed sparse parts."""
    for key in npz.files:
        if key == "__meta__":
            continue
        if not key.startswith(("out__", "csr__")):
            raise Malformed(f"unexpected entry {key!r}")
        if npz[key].dtype.kind not in "biuf":
            raise Malformed(f"{key!r} has dtype {npz[key].dtype} (numeric outputs only)")


def load(path: Path, strict: bool = False) -> Baseline | None:
    """The stored baseline, or None when there is none. Nothing in the file executes on load
    (no pickles); ``strict`` (a file a candidate's process wrote) also refuses anything but
    numeric arrays and well-formed sparse matrices, with :class:`Malformed`."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        if strict:
            _validate(npz)
        meta = json.loads(str(npz["__meta__"]))
        outputs: dict[str, Any] = {
            k.removeprefix("out__"): npz[k] for k in npz.files if k.startswith("out__")
        }
        sparse_names = {k.split("__", 2)[2] for k in npz.files if k.startswith("csr__")}
        for name in sparse_names:
            data, idx, ptr, shape = (npz[f"csr__{p}__{name}"] for p in _SPARSE)
            outputs[name] = sp.csr_matrix((data, idx, ptr), shape=tuple(int(s) for s in shape))
            if strict:
                outputs[name].check_format(full_check=True)
    digest = meta.pop("output_hash", None) or meta.pop("weights_hash", "")
    work = meta.pop("work", {})
    if strict and not (
        isinstance(work, dict)
        and all(isinstance(k, str) and isinstance(v, int | float) for k, v in work.items())
    ):
        raise Malformed("work counters are not a mapping of names to numbers")
    return Baseline(output_hash=digest, outputs=outputs, meta=meta, work=work)


Compare = Callable[[Any, Mapping[str, Any]], tuple[dict, bool]]


def work_mismatch(work: Mapping[str, float], reference: Mapping[str, float]) -> list[str]:
    """Work counters that differ from the reference's (a missing counter differs)."""
    names = sorted(set(work) | set(reference))
    return [n for n in names if work.get(n) != reference.get(n)]


def verdict(
    run_hash: str,
    result: Any,
    baseline: Baseline | None,
    compare: Compare,
) -> tuple[str, dict[str, float]]:
    """``exact`` if hashes match and the work counters are equal, else ``close`` if the work
    counters are equal and the method's tolerance passes, else ``wrong``.

    ``none`` when there is no baseline. ``result`` is the run's RunResult (host outputs).
    Returns the verdict and the comparison metrics.
    """
    if baseline is None:
        return "none", {}
    differ = work_mismatch(result.work, baseline.work)
    if differ:
        metrics = {f"work_{n}": float(result.work.get(n, -1)) for n in differ}
        metrics.update({f"work_{n}_baseline": float(baseline.work.get(n, -1)) for n in differ})
        return "wrong", metrics
    if run_hash == baseline.output_hash:
        return "exact", {}
    outputs = result.outputs
    shared = {k for k in baseline.outputs if k in outputs}
    if not shared or any(
        getattr(outputs[k], "shape", None) != getattr(baseline.outputs[k], "shape", None)
        for k in shared
    ):
        return "wrong", {}
    metrics, ok = compare(result, baseline.outputs)
    return ("close" if ok else "wrong"), {k: float(v) for k, v in metrics.items()}
