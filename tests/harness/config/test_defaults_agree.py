"""Defaults are written in two places — the YAML a user reads (``conf/``) and the dataclass
that validates it — so they must agree: every key a YAML file sets that its schema also gives a
default must have the same value there. Declarations that only the YAML holds (a method's name,
surfaces, hashed outputs, search space) have no default to disagree with."""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from harness.config import schema

CONF = Path(__file__).resolve().parents[3] / "conf"
DECLARATIONS = set(schema.METHOD_METADATA) - {"tol"}


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def _same(yaml_value: Any, default: Any) -> bool:
    if isinstance(default, dict) and isinstance(yaml_value, dict):
        return all(k in default and _same(v, default[k]) for k, v in yaml_value.items())
    if isinstance(default, tuple):
        default = list(default)
    if (
        isinstance(default, str)
        and isinstance(yaml_value, int)
        and not isinstance(yaml_value, bool)
    ):
        return default == str(yaml_value)  # a str field that also takes words (batch_size=auto)
    if isinstance(default, float) and isinstance(yaml_value, int | float):
        return math.isclose(default, yaml_value, rel_tol=1e-12)
    return yaml_value == default


def _disagreements(
    values: dict[str, Any], cls: type, skip: frozenset[str] = frozenset()
) -> list[str]:
    defaults = _defaults(cls)
    return [
        f"{key}: yaml {value!r} vs {cls.__name__} {defaults[key]!r}"
        for key, value in values.items()
        if key not in skip and key in defaults and not _same(value, defaults[key])
    ]


def _load(path: Path) -> dict:
    """The YAML as Hydra reads it (OmegaConf: ``1.0e4`` is a float, as PyYAML's 1.1 rules
    would make it a string), interpolations left as written."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _schema_files() -> list[Path]:
    return sorted(p for p in CONF.rglob("*.yaml") if "_schema_:" in p.read_text())


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: str(p.relative_to(CONF)))
def test_method_and_dataset_yaml_agree_with_their_schema(path):
    values = _load(path)
    module, name = values["_schema_"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert _disagreements(values, cls, frozenset(DECLARATIONS | {"defaults"})) == []


def test_harness_keys_agree_with_the_schema():
    values = _load(CONF / "config.yaml")
    blocks = {f.name: f.type for f in dataclasses.fields(schema.Config)}
    found = [k for k in values if k in blocks and k not in ("method", "dataset", "hardware")]
    assert {"bench", "paths", "tracking", "checkpoint", "correctness"} <= set(found)
    for key in found:
        cls = getattr(schema, blocks[key]) if isinstance(blocks[key], str) else blocks[key]
        assert _disagreements(values[key], cls) == [], key


def test_a_disagreement_is_found():
    from harness.config.schema import BenchConfig

    assert _disagreements({"repeats": 99}, BenchConfig) != []
    assert _disagreements({"repeats": _defaults(BenchConfig)["repeats"]}, BenchConfig) == []
