"""The Hydra application behind ``python -m harness`` and the ``harness`` console script."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.compose import CONF_DIR
from harness.errors import UserError
from harness.schema import register

register()


def sweep_id() -> str:
    """The id every job of this multirun shares ("" for a single run): Hydra's sweep dir,
    e.g. ``2025-06-01_12-00-00``, prefixed by the ``+sweep=`` preset's name when there is one.
    """
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return ""
    stamp = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(Path(hc.sweep.dir).parts[-2:]))
    preset = hc.runtime.choices.get("sweep")
    return f"{preset}-{stamp}" if preset else stamp


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float:
    """Run one benchmark; returns the median elapsed seconds (the sweepers' objective)."""
    from harness.validate import validate_all

    overrides = list(HydraConfig.get().overrides.task)
    # in a multirun, a failed job raises: the launcher records it and runs the others (an
    # exit would end a local sweep, and leave a SLURM launcher without the job's result)
    sweep = sweep_id()
    try:
        valid = validate_all(cfg)  # before importing torch: config errors come back fast
        from harness import runner

        outcome = runner.run(cfg, valid, overrides, sweep_id=sweep)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if sweep:
            raise
        sys.exit(2)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr, flush=True)
        if sweep:
            raise RuntimeError(outcome.error)
        sys.exit(1)
    m = outcome.measurement
    return m.median if m and m.elapsed else float("inf")
