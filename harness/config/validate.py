"""Validate composed configs against the schemas methods and datasets declare (``_schema_``),
and the method ↔ dataset pairing — all before torch (or any method code) is imported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config.schema import (
    AUTOCASTS,
    DETERMINISMS,
    ROLE_GROUPS,
    TIMINGS,
    Config,
    DatasetConfig,
    MethodConfig,
    check_accept,
    check_ranges,
)
from harness.core.errors import UserError


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
    base = MethodConfig if key == "method" else DatasetConfig
    if not (isinstance(schema, type) and issubclass(schema, base)):
        raise UserError(f"config {key}._schema_: {raw['_schema_']} is not a {base.__name__}")
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
        if section_cfg.min_pairs > section_cfg.max_pairs:
            raise UserError(
                f"{name}.min_pairs={section_cfg.min_pairs}: more than "
                f"{name}.max_pairs={section_cfg.max_pairs}"
            )
    return obj


def check_contract(method: MethodConfig) -> None:
    """The method's declarations (schema class attributes) are well formed."""
    cls = type(method)
    where = f"method {method.name} ({cls.__module__}.{cls.__qualname__})"
    if cls.ROLE not in ROLE_GROUPS:
        raise UserError(f"{where}: ROLE {cls.ROLE!r} is not one of {list(ROLE_GROUPS)}")
    if cls.TIMING not in TIMINGS:
        raise UserError(f"{where}: TIMING {cls.TIMING!r} is not one of {list(TIMINGS)}")
    if cls.DETERMINISM not in DETERMINISMS:
        raise UserError(f"{where}: DETERMINISM {cls.DETERMINISM!r} not in {list(DETERMINISMS)}")
    bad = [a for a in cls.AUTOCAST if a not in AUTOCASTS]
    if bad:
        raise UserError(f"{where}: AUTOCAST {bad} not in {list(AUTOCASTS)}")


def check_pairing(method: MethodConfig, dataset: DatasetConfig, dataset_choice: str) -> None:
    """A method only runs on a dataset of the role it needs: one line naming both."""
    need, have = type(method).ROLE, type(dataset).ROLE
    if need != have:
        group = ROLE_GROUPS.get(need, need)
        raise UserError(
            f"method={method.name} needs a '{need}' dataset but dataset={dataset_choice} "
            f"yields '{have or 'nothing declared'}'; pick one of dataset={group}/... "
            "(python -m harness list)"
        )


def autocast_choice(top: Config, method: MethodConfig) -> str | None:
    """The autocast precision in force (method key wins over the hardware profile), checked
    against what the method supports."""
    choice = method.autocast or top.hardware.autocast
    if choice and choice not in type(method).AUTOCAST:
        supported = list(type(method).AUTOCAST) or "none"
        key = "method.autocast" if method.autocast else f"hardware={top.hardware.name} autocast"
        raise UserError(
            f"{key}={choice}: method {method.name} does not support {choice} autocast "
            f"(supported: {supported})"
        )
    return choice


@dataclass(frozen=True)
class Validated:
    """The composed config as typed objects: harness keys, method and dataset."""

    top: Config
    method: Any
    dataset: Any
    autocast: str | None = None


def validate_all(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> Validated:
    """Validate everything before any heavy import or any side effect.

    ``choices`` are Hydra's config-group choices (names the dataset option in errors).
    """
    top = top_level(cfg)
    method = section(cfg.method, "method")
    check_contract(method)
    dataset = section(cfg.dataset, "dataset")
    choice = (choices or {}).get("dataset") or dataset.name
    check_pairing(method, dataset, choice)
    autocast = autocast_choice(top, method)
    return Validated(top=top, method=method, dataset=dataset, autocast=autocast)
