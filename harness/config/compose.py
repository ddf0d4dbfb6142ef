"""Compose the harness config outside ``@hydra.main`` (loop, tune, compare, worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key where known."""
    from omegaconf.errors import OmegaConfBaseException

    parts = [_first_line(exc)]
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OmegaConfBaseException) and _first_line(cause) not in parts[0]:
        parts.append(_first_line(cause))
    key = getattr(cause, "full_key", None) or getattr(exc, "full_key", None)
    if key and key not in " ".join(parts):
        parts.insert(0, f"{key}:")
    return " ".join(parts)


def compose(overrides: list[str], with_choices: bool = False) -> Any:
    """The same config ``python -m harness <overrides>`` would run (Hydra's compose API).

    The config search path is initialised once per process and then reused, so repeated
    composition (one per tuning trial) costs milliseconds. ``with_choices`` also returns
    Hydra's config-group choices (``{"method": "rctd", "dataset": "spatial/synthetic", ...}``).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from harness.config.schema import register

    if not GlobalHydra.instance().is_initialized():
        register()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
    if not with_choices:
        return hydra_compose(config_name="config", overrides=list(overrides))
    cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, {k: str(v) for k, v in choices.items() if not k.startswith("hydra/")}


def compose_checked(overrides: list[str]) -> tuple[DictConfig, Any]:
    """Compose and validate; every config mistake becomes a one-line ``UserError``.

    Returns the composed config and its :class:`harness.config.validate.Validated` objects.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.config.suggest import with_hint
    from harness.config.validate import validate_all
    from harness.core.errors import UserError

    try:
        cfg, choices = compose(overrides, with_choices=True)
        return cfg, validate_all(cfg, choices)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(with_hint(describe(exc), overrides)) from None
    except UserError as exc:
        raise UserError(with_hint(str(exc), overrides)) from None
