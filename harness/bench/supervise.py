"""One benchmark from the command line: run and recorded exactly once, whatever ends it.

A normal end (``run``/``baseline``), a crash (``crash``: the exception re-raised), a watchdog
timeout (``timeout``, exit 124) or SIGINT/SIGTERM (``killed``: re-raised as
:class:`~harness.core.signals.Interrupted`, exit 128 + signal) each write one results.tsv row
and end the MLflow run (FINISHED, FAILED, KILLED, KILLED). A signal arriving while the record is
being written waits for it.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

from omegaconf import DictConfig

from harness.bench.runner import Benchmark, Outcome
from harness.config import validate
from harness.core.errors import UserError, print_error
from harness.core.signals import as_interrupted, catch_interrupts
from harness.sinks.console import Reporter


def run(
    cfg: DictConfig,
    valid: validate.Validated,
    overrides: list[str],
    sweep_id: str = "",
    swept: list[str] | None = None,
) -> Outcome:
    """Benchmark and record (module doc). UserErrors propagate before anything is written.

    ``sweep_id`` tags the run as one job of a sweep ($HARNESS_SWEEP_ID wins when set);
    ``swept`` names the keys the sweep varies (they lead the run's name).
    """
    with catch_interrupts() as signals:
        reporter = Reporter()
        bench = Benchmark(cfg, valid, overrides, reporter)  # hardware errors raise here
        bench.sweep_id = bench.sweep_id or sweep_id
        bench.swept = list(swept or [])
        return _run(bench, signals)


def _run(bench: Benchmark, signals: Any) -> Outcome:
    """The protocol under a watchdog; the one record of its end (run, crash, killed, timeout)
    is never cut by a signal (``signals.deferred``)."""
    limit = bench.top.bench.timeout_s

    def on_timeout() -> None:
        outcome = Outcome(status="timeout", output_hash="TIMEOUT", error=f"timeout after {limit} s")
        if bench.record(outcome):
            print_error(f"benchmark exceeded bench.timeout_s={limit}")
            os._exit(124)

    timer = threading.Timer(limit, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        outcome = bench.execute()
    except UserError:
        timer.cancel()
        raise
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM (harness.core.signals)
        timer.cancel()
        stop = as_interrupted(exc)
        bench.reporter.info(f"interrupted by {stop.name}: recording the run as killed")
        killed = Outcome(status="killed", output_hash="KILLED", error=f"interrupted by {stop.name}")
        with signals.deferred():
            bench.record(killed, wait=True)
        stop.recorded = True
        raise stop from None
    except Exception as exc:
        timer.cancel()
        bench.reporter.info("".join(traceback.format_exception(exc)))
        crash = Outcome(status="crash", output_hash="CRASH", error=f"{type(exc).__name__}: {exc}")
        with signals.deferred():
            bench.record(crash, wait=True)
        raise
    timer.cancel()
    with signals.deferred():
        recorded = bench.record(outcome)
    if not recorded:  # the watchdog got there first
        time.sleep(3600)
    print(bench.summary(outcome), flush=True)
    return outcome
