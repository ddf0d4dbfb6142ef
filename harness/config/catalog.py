"""``python -m harness list``: what can be composed — methods, datasets, hardware, sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config.compose import CONF_DIR


def _yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    return OmegaConf.to_container(node) if node is not None else {}  # type: ignore[return-value]


def _schema(path: str) -> Any:
    from harness.config.validate import locate

    try:
        return locate(path, "_schema_")
    except Exception:
        return None


def _default_dataset(method_yaml: dict[str, Any]) -> str:
    for entry in method_yaml.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.startswith("/dataset"):
                    return str(value)
    return "-"


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and not text.startswith("# @package"):
            return text.lstrip("# ").strip()
    return ""


def lines(conf: Path = CONF_DIR) -> list[str]:
    """One line per method, dataset, hardware profile and sweep preset."""
    out = ["methods (method=<name>: role needed, timing, determinism, default dataset):"]
    for path in sorted((conf / "method").glob("*.yaml")):
        y = _yaml(path)
        spec = _schema(str(y.get("_schema_", "")))
        role = getattr(spec, "ROLE", "?")
        timing, det = getattr(spec, "TIMING", "?"), getattr(spec, "DETERMINISM", "?")
        out.append(
            f"  {path.stem:16} role {role:18} {timing:7} {det:12} dataset={_default_dataset(y)}"
        )
    out.append("datasets (dataset=<group>/<name>: role yielded):")
    for path in sorted((conf / "dataset").glob("*/*.yaml")):
        y = _yaml(path)
        spec = _schema(str(y.get("_schema_", "")))
        name = f"{path.parent.name}/{path.stem}"
        out.append(f"  {name:22} role {getattr(spec, 'ROLE', '?'):18} {_first_comment(path)}")
    out.append("hardware (hardware=<name>):")
    for path in sorted((conf / "hardware").glob("*.yaml")):
        out.append(f"  {path.stem:16} {_first_comment(path)}")
    out.append("sweep presets (-m +sweep=<name>):")
    for path in sorted((conf / "sweep").glob("*.yaml")):
        out.append(f"  {path.stem:16} {_first_comment(path)}")
    return out
