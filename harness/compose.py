"""Compose the harness config outside ``@hydra.main`` (loop, tune, compare, worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str]) -> DictConfig:
    """The same config ``python -m harness <overrides>`` would run (Hydra's compose API).

    The config search path is initialised once per process and then reused, so repeated
    composition (one per tuning trial) costs milliseconds.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.schema import register

    if not GlobalHydra.instance().is_initialized():
        register()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
    return hydra_compose(config_name="config", overrides=list(overrides))


def compose_checked(overrides: list[str]) -> tuple[DictConfig, Any]:
    """Compose and validate; every config mistake becomes a one-line ``UserError``.

    Returns the composed config and its :class:`harness.validate.Validated` objects.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.cli import describe
    from harness.errors import UserError
    from harness.validate import validate_all

    try:
        cfg = compose(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(describe(exc)) from None
    return cfg, validate_all(cfg)
