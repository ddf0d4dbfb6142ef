"""A long-lived benchmark worker for interleaved A/B timing (``python -m harness.worker``).

``python -m harness.worker <overrides>`` composes and validates the config, loads the data,
prepares the method and runs the warm-up, then answers JSON requests on stdin, one per line:
``{"op": "run"}`` (one timed run), ``{"op": "judge"}`` (verdict of the runs so far against the
stored baseline) and ``{"op": "quit"}``. Replies are JSON lines on stdout; logs go to stderr.
Run it with the checkout to measure as the working directory: ``python -m`` imports that
checkout's code, so two workers on two git worktrees compare two commits in one session.
"""

from __future__ import annotations

import gc
import json
import sys
import traceback
from typing import Any


def _send(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def serve(overrides: list[str]) -> None:
    """Set up one benchmark and serve timed runs until told to quit."""
    from harness.bench.contract import RunContext
    from harness.bench.protocol import (
        Measurement,
        peak_memory_mb,
        reset_peak_memory,
        timed_call,
    )
    from harness.bench.runner import Benchmark
    from harness.config.compose import compose_checked
    from harness.sinks.console import Reporter

    cfg, valid = compose_checked(overrides)
    bench = Benchmark(cfg, valid, overrides, Reporter(stream=sys.stderr, rich=False))
    method, data, state = bench.setup()
    timing, rt = bench.spec.TIMING, bench.runtime
    gc.collect()
    gc.freeze()  # see harness.bench.protocol.measure
    m = Measurement(timing=timing)

    def run(ctx: RunContext) -> Any:
        return method.run(state, ctx)

    n_warm = bench.top.bench.warmup if timing == "repeat" else 1
    for _ in range(n_warm):
        steps = bench.top.bench.warmup_steps if timing == "train" else None
        ctx = RunContext(warmup=True, max_steps=steps, synchronize=rt.synchronize)
        seconds, _, res = timed_call(run, rt, ctx)
        m.warmup_s.append(seconds)
        m.warmup_hashes.append(bench.digest(res.outputs))
    reset_peak_memory(rt)
    _send({"event": "ready", "commit": bench.env["commit"], "warmup_s": m.warmup_s})
    for line in sys.stdin:
        op = json.loads(line).get("op")
        if op == "run":
            ctx = RunContext(synchronize=rt.synchronize)
            seconds, cpu, m.result = timed_call(run, rt, ctx)
            m.elapsed.append(seconds)
            m.cpu_s.append(cpu)
            m.samples.extend(ctx.samples if timing == "train" and ctx.samples else [seconds])
            m.hashes.append(bench.digest(m.outputs))
            _send({"event": "run", "elapsed": seconds, "cpu": cpu, "hash": m.hashes[-1]})
        elif op == "judge":
            m.peak_mem_mb = peak_memory_mb(rt)
            outcome = bench.conclude(method, data, m)
            _send(
                {
                    "event": "judged",
                    "verdict": outcome.verdict,
                    "hash": outcome.output_hash,
                    "metrics": outcome.metrics,
                    "peak_mem_mb": m.peak_mem_mb,
                }
            )
        elif op == "quit":
            break


def main() -> None:
    from harness.core.errors import UserError

    try:
        serve(sys.argv[1:])
    except UserError as exc:
        _send({"event": "error", "kind": "user", "message": str(exc)})
        sys.exit(2)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _send({"event": "error", "kind": "crash", "message": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
