"""Task identity: which method keys define the task (and so key baselines and checkpoints).

Every method key is part of the task except the harness's metadata (name, surfaces, hashed
outputs, tolerances, search space), the declared search space itself (a tuned run is judged
against the default run), and keys whose schema field says ``task=False`` (execution-only
knobs such as a loader's worker count, and precision, which is judged rather than keyed).
Nested keys are dotted (``tol.max_abs_dw``); a search-space entry excludes its dotted key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.config.schema import METHOD_METADATA


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        if f.metadata.get("task") is False:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flat(value, key + "."))
        else:
            out[key] = value
    return out


def task_params(method: Any) -> dict[str, Any]:
    """The method's task-defining keys and values (dotted names, sorted)."""
    excluded = set(METHOD_METADATA) | set(method.search_space)
    flat = _flat(method)
    keep = {
        k: v
        for k, v in flat.items()
        if k.split(".", 1)[0] not in METHOD_METADATA and k not in excluded
    }
    return dict(sorted(keep.items()))
