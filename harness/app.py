"""The Hydra application behind ``python -m harness`` and the ``harness`` console script."""

from __future__ import annotations

import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.config.compose import CONF_DIR
from harness.config.schema import register
from harness.core.errors import UserError, print_error

register()


def sweep_id() -> str:
    """The id every job of this multirun shares ("" for a single run): Hydra's sweep dir,
    e.g. ``2025-06-01_12-00-00``, prefixed by the ``+sweep=`` preset's name when there is one.
    """
    from harness.reporting.sweep import sweep_id_of

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return ""
    return sweep_id_of(str(hc.sweep.dir), hc.runtime.choices.get("sweep"))


def swept_keys() -> list[str]:
    """The keys this multirun sweeps (what tells its jobs apart in their run names): the
    sweeper's ``params`` and, when the job runs in the launching process, the command line's
    ``key=a,b`` / ``range(…)`` / ``choice(…)`` / ``glob(…)`` overrides."""
    hc = HydraConfig.get()
    keys = [str(k) for k in (hc.sweeper.get("params") or {})]
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        if value and ("," in value or re.match(r"(range|choice|glob)\(", value)):
            keys.append(key.lstrip("+~"))
    return list(dict.fromkeys(keys))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float:
    """Run one benchmark; returns the median elapsed seconds (the sweepers' objective)."""
    from harness.config.validate import validate_all

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if v is not None}
    # in a multirun, a failed job raises: the launcher records it and runs the others (an
    # exit would end a local sweep, and leave a SLURM launcher without the job's result)
    sweep = sweep_id()
    try:
        valid = validate_all(cfg, choices)  # before importing torch: config errors come fast
        from harness.bench import supervise

        outcome = supervise.run(cfg, valid, overrides, sweep_id=sweep,
                             swept=swept_keys() if sweep else [])  # fmt: skip
    except UserError as exc:
        from harness.config.suggest import with_hint

        print_error(with_hint(str(exc), overrides))
        if sweep:
            raise
        sys.exit(2)
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: recorded as killed; a sweep stops too
        from harness.core.signals import as_interrupted

        stop = as_interrupted(exc)
        done = (
            ": the run is recorded as killed (results.tsv status=killed)" if stop.recorded else ""
        )
        print_error(f"interrupted by {stop.name}{done}")
        sys.exit(stop.exit_code)
    if outcome.error:
        print_error(outcome.error)
        if sweep:
            raise RuntimeError(outcome.error)
        sys.exit(1)
    m = outcome.measurement
    return m.median if m and m.elapsed else float("inf")
