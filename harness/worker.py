"""A long-lived benchmark worker for interleaved A/B timing.

``python -m harness.worker <overrides>`` composes and validates the config, loads the data,
prepares the method and runs the warmups, then answers JSON requests on stdin, one per line:
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
    from harness.compose import compose_checked
    from harness.display import Reporter
    from harness.protocol import Measurement, peak_memory_mb, timed_call
    from harness.runner import Benchmark

    cfg, valid = compose_checked(overrides)
    bench = Benchmark(cfg, valid, overrides, Reporter(stream=sys.stderr, rich=False))
    method, data, state = bench.setup()
    gc.collect()
    gc.freeze()  # see harness.protocol.measure
    m = Measurement()
    for _ in range(bench.top.bench.warmup):
        seconds, host = timed_call(lambda: method.run(state), bench.runtime)
        m.warmup_s.append(seconds)
        m.warmup_hashes.append(bench.digest(host))
    _send({"event": "ready", "commit": bench.env["commit"], "warmup_s": m.warmup_s})
    for line in sys.stdin:
        op = json.loads(line).get("op")
        if op == "run":
            seconds, m.outputs = timed_call(lambda: method.run(state), bench.runtime)
            m.elapsed.append(seconds)
            m.hashes.append(bench.digest(m.outputs))
            _send({"event": "run", "elapsed": seconds, "hash": m.hashes[-1]})
        elif op == "judge":
            m.peak_mem_mb = peak_memory_mb(bench.runtime)
            outcome = bench.conclude(method, data, m)
            _send(
                {
                    "event": "judged",
                    "verdict": outcome.verdict,
                    "hash": outcome.weights_hash,
                    "metrics": outcome.metrics,
                    "peak_mem_mb": m.peak_mem_mb,
                }
            )
        elif op == "quit":
            break


def main() -> None:
    from harness.errors import UserError

    try:
        serve(sys.argv[1:])
    except UserError as exc:
        _send({"event": "error", "kind": "user", "message": str(exc)})
        sys.exit(2)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _send({"event": "error", "kind": "crash", "message": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
