"""The harness's contract for methods: the ONLY module ``methods/`` imports.

Names are loaded lazily (PEP 562), so a method's schema module can import its base classes
from here without pulling in torch: the config is validated before any heavy import.

Config schema: ``MethodConfig``, ``DatasetConfig``, ``rng`` (ranges; ``task=False`` marks an
execution-only key). Errors: ``UserError``. Running: ``Runtime``, ``RunContext``,
``RunResult``, ``SeriesPoint``, ``WorkCounter``, ``Checkpoint``; progress: ``ctx.plan(phase=n)``
(epoch i/n, s/epoch, time left, printed by the harness at each ``ctx.mark``) and ``phase(label)``
(announce a long phase without epochs). Outputs: ``output_hash``,
``to_numpy``, ``host``, ``max_relative_l2``. Data: ``read_h5ad``, ``counts_matrix``, ``resolve_user_path``,
``pbmc68k_counts``, ``pbmc68k_path``; files: ``atomic_write``. Tools for peer/benchmark scripts: ``prepared``.
What every glue repeats: ``seed_everything(seed)`` (torch, NumPy, random), ``log(name, message)``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MethodConfig": "harness.config.schema",
    "DatasetConfig": "harness.config.schema",
    "rng": "harness.config.schema",
    "UserError": "harness.core.errors",
    "Runtime": "harness.bench.runtime",
    "RunContext": "harness.bench.contract",
    "RunResult": "harness.bench.contract",
    "SeriesPoint": "harness.bench.contract",
    "WorkCounter": "harness.bench.contract",
    "Checkpoint": "harness.bench.checkpoint",
    "seed_everything": "harness.bench.glue",
    "log": "harness.bench.glue",
    "output_hash": "harness.bench.hashing",
    "max_relative_l2": "harness.bench.distance",
    "to_numpy": "harness.bench.hashing",
    "host": "harness.bench.hashing",
    "read_h5ad": "harness.data.counts",
    "counts_matrix": "harness.data.counts",
    "resolve_user_path": "harness.data.counts",
    "pbmc68k_counts": "harness.data.counts",
    "pbmc68k_path": "harness.data.counts",
    "prepared": "harness.bench.session",
    "atomic_write": "harness.core.fsio",
    "phase": "harness.bench.progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
