"""The Hydra application behind ``python -m harness`` and the ``harness`` console script."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.errors import UserError
from harness.schema import register

register()

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float:
    """Run one benchmark; returns the median elapsed seconds (the sweepers' objective)."""
    from harness.validate import validate_all

    overrides = list(HydraConfig.get().overrides.task)
    try:
        valid = validate_all(cfg)  # before importing torch: config errors come back fast
        from harness import runner

        outcome = runner.run(cfg, valid, overrides)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr, flush=True)
        sys.exit(1)
    m = outcome.measurement
    return m.median if m and m.elapsed else float("inf")
