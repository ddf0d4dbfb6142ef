"""A method's Optuna search space, declared in ``conf/method/<name>.yaml`` under search_space.

    search_space:
      batch_size: {type: int, low: 1000, high: 50000, log: true}
      qp_sweeps: {type: int, low: 10, high: 100, step: 10}
      dtype: {type: categorical, choices: [float32, float64]}
      hardware.compile: {type: categorical, choices: [false, true]}

Names are method keys (dotted for nested ones, e.g. ``tol.max_abs_dw``) or ``hardware.<key>``.
"""

from __future__ import annotations

from typing import Any

from harness.core.errors import UserError

_KINDS = ("int", "float", "categorical")


def check_space(space: dict[str, Any]) -> None:
    """Refuse a malformed space with one line naming the entry."""
    if not space:
        raise UserError("method.search_space is empty: declare the tunable keys in conf/method/")
    for name, spec in space.items():
        where = f"method.search_space.{name}"
        if not isinstance(spec, dict) or spec.get("type") not in _KINDS:
            raise UserError(f"{where}: needs type: one of {list(_KINDS)}")
        if spec["type"] == "categorical":
            if not spec.get("choices"):
                raise UserError(f"{where}: categorical needs a non-empty choices list")
        elif "low" not in spec or "high" not in spec or spec["low"] > spec["high"]:
            raise UserError(f"{where}: needs low <= high")


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one value per entry from an Optuna trial."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif kind == "int":
            params[name] = trial.suggest_int(
                name,
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step", 1)),
                log=bool(spec.get("log", False)),
            )
        else:
            params[name] = trial.suggest_float(
                name,
                float(spec["low"]),
                float(spec["high"]),
                step=spec.get("step"),
                log=bool(spec.get("log", False)),
            )
    return params


def as_overrides(params: dict[str, Any]) -> list[str]:
    """Hydra overrides for drawn parameters (``method.<name>=v`` / ``hardware.<key>=v``)."""
    out = []
    for name, value in params.items():
        key = name if name.startswith("hardware.") else f"method.{name}"
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f"{key}={text}")
    return out
