"""Baselines (hash + outputs as npz) and the verdict tiers exact → close → wrong."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.hashing import to_numpy

Compare = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], tuple[dict, bool]]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def short_hash(payload: Any) -> str:
    """8 hex chars of a JSON-serialisable payload (stable key order)."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


@dataclass(frozen=True)
class BaselineKey:
    method: str
    method_params: str  # short hash of the values of the method's baseline_keys ("" if none)
    dataset: str
    dataset_params: str  # short hash of the dataset's resolved config
    hardware: str
    environment: str  # short hash of environment_key()

    def path(self, root: Path) -> Path:
        name = f"{_slug(self.dataset)}-{self.dataset_params}__{_slug(self.hardware)}-{self.environment}"
        method = _slug(self.method) + (f"-{self.method_params}" if self.method_params else "")
        return root / method / f"{name}.npz"


@dataclass
class Baseline:
    weights_hash: str
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any]


def save(path: Path, weights_hash: str, outputs: Mapping[str, Any], meta: dict[str, Any]) -> None:
    """Write the baseline atomically (temp file + rename): never a half-written npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"out__{k}": to_numpy(v) for k, v in outputs.items()}
    header = json.dumps({"weights_hash": weights_hash, **meta}, default=str)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __meta__=np.array(header), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Baseline | None:
    """The stored baseline, or None when there is none."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__meta__"]))
        outputs = {k.removeprefix("out__"): npz[k] for k in npz.files if k.startswith("out__")}
    return Baseline(weights_hash=meta.pop("weights_hash"), outputs=outputs, meta=meta)


def verdict(
    run_hash: str,
    outputs: Mapping[str, Any],
    baseline: Baseline | None,
    compare: Compare,
) -> tuple[str, dict[str, float]]:
    """``exact`` if hashes match, else ``close`` if the method's tolerance passes, else ``wrong``.

    ``none`` when there is no baseline. Returns the verdict and the comparison metrics.
    """
    if baseline is None:
        return "none", {}
    if run_hash == baseline.weights_hash:
        return "exact", {}
    host = {k: to_numpy(v) for k, v in outputs.items()}
    shared = {k for k in baseline.outputs if k in host}
    if not shared or any(host[k].shape != baseline.outputs[k].shape for k in shared):
        return "wrong", {}
    metrics, ok = compare(host, baseline.outputs)
    return ("close" if ok else "wrong"), {k: float(v) for k, v in metrics.items()}
