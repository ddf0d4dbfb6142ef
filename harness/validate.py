"""Validate composed configs against the schemas methods and datasets declare (``_schema_``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import UserError
from harness.schema import Config, check_accept, check_ranges


def locate(path: str, key: str) -> Any:
    """Import ``package.module.attr``; a UserError naming ``key`` when it does not exist."""
    from hydra.utils import get_object

    try:
        return get_object(path)
    except Exception as exc:  # ImportError, AttributeError, hydra's wrappers
        raise UserError(f"config {key}: cannot import '{path}' ({type(exc).__name__})") from None


def omegaconf_message(exc: OmegaConfBaseException, prefix: str = "") -> str:
    """One line from an OmegaConf error: the full key and the first line of the message."""
    key = getattr(exc, "full_key", "") or ""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = f"{prefix}{key}" if key else prefix.rstrip(".")
    return f"config {where}: {msg}" if where else f"config: {msg}"


def section(node: DictConfig, key: str) -> Any:
    """Validate ``cfg.<key>`` (method or dataset) against its ``_schema_``; return the object."""
    raw = OmegaConf.to_container(node, resolve=True)
    if not isinstance(raw, dict) or "_schema_" not in raw:
        raise UserError(f"config {key}: no _schema_ declared in conf/{key}/<name>.yaml")
    schema = locate(raw["_schema_"], f"{key}._schema_")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UserError(omegaconf_message(exc, f"{key}.")) from None
    check_ranges(obj, f"{key}.")
    return obj


def top_level(cfg: DictConfig) -> Config:
    """The harness's own keys as a typed ``Config`` (method/dataset left as dicts)."""
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise UserError(omegaconf_message(exc)) from None
    if not isinstance(obj, Config):
        raise UserError("config: the root config must start from 'base_config' in its defaults")
    check_ranges(obj)
    check_accept(obj.correctness.accept)
    for name, section_cfg in (("loop", obj.loop), ("compare", obj.compare)):
        if section_cfg.pairs > section_cfg.rounds:
            raise UserError(
                f"{name}.pairs={section_cfg.pairs}: more worker pairs than "
                f"{name}.rounds={section_cfg.rounds}"
            )
    return obj


@dataclass(frozen=True)
class Validated:
    """The composed config as typed objects: harness keys, method and dataset."""

    top: Config
    method: Any
    dataset: Any


def validate_all(cfg: DictConfig) -> Validated:
    """Validate everything before any heavy import or any side effect."""
    top = top_level(cfg)
    method = section(cfg.method, "method")
    unknown = [k for k in method.baseline_keys if not hasattr(method, k)]
    if unknown:
        raise UserError(f"method.baseline_keys: {unknown} are not keys of method {method.name}")
    return Validated(top=top, method=method, dataset=section(cfg.dataset, "dataset"))
