"""The end of a multirun: ONE table of the sweep's jobs and its id.

``SweepTable`` is a Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``). When the
multirun starts, in the launching process, it notes the sweep id (as the jobs compute it), the
results directory and the swept keys; when the process exits — after the last job, or after a
failure or an interrupt ended the sweep — it prints the rows results.tsv holds for that id:
the swept values, status, verdict, elapsed_s and the headline quality of every job.
"""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def sweep_id_of(sweep_dir: str, preset: str | None) -> str:
    """The id every job of a multirun shares: the sweep directory's last two parts (its date
    and time), prefixed by the ``+sweep=`` preset's name when there is one."""
    stamp = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(Path(sweep_dir).parts[-2:]))
    return f"{preset}-{stamp}" if preset else stamp


def swept_keys_of(task_overrides: list[str], sweeper_params: dict[str, Any]) -> list[str]:
    """The keys a multirun sweeps: the sweeper's ``params`` and the ``key=a,b`` /
    ``range(…)`` / ``choice(…)`` / ``glob(…)`` overrides."""
    keys = [str(k).lstrip("+~") for k in sweeper_params]
    for arg in task_overrides:
        key, _, value = arg.partition("=")
        if value and ("," in value or re.match(r"(range|choice|glob)\(", value)):
            keys.append(key.lstrip("+~"))
    return list(dict.fromkeys(keys))


def print_sweep(results: Path, sweep: str, keys: list[str]) -> None:
    """The jobs results.tsv holds for ``sweep`` (a job stopped by a config error has none)."""
    from harness.reporting.rows import job_table, varying_keys
    from harness.sinks.results_tsv import read_rows

    try:
        rows = [
            r for r in read_rows(results / "results.tsv") if f"sweep:{sweep}" in r["tag"].split()
        ]
    except (OSError, ValueError):
        rows = []
    print(f"\nsweep {sweep}: {len(rows)} job(s) recorded in {results / 'results.tsv'}")
    if rows:
        varying = varying_keys(rows)
        shown = [k for k in keys if k in varying] if len(rows) > 1 else keys
        print(job_table(rows, shown or varying))
        print(f"  report: python -m harness.report sweep={sweep}")
    print(f"sweep id: {sweep}", flush=True)


class SweepTable(Callback):
    """Prints the sweep's table when the launching process ends (module doc)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        hc = config.hydra
        sweep = os.environ.get("HARNESS_SWEEP_ID") or sweep_id_of(
            str(hc.sweep.dir), hc.runtime.choices.get("sweep")
        )
        keys = swept_keys_of(list(hc.overrides.task), dict(hc.sweeper.get("params") or {}))
        results = Path(str(config.paths.results))
        atexit.register(print_sweep, results, sweep, keys)
