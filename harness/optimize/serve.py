"""A long-lived benchmark worker for interleaved A/B timing (``python -m harness.worker``).

``python -m harness.worker <overrides>`` composes and validates the config, loads the data,
prepares the method and runs the warm-up, then answers JSON requests on stdin, one per line;
replies are JSON lines on stdout, logs go to stderr. Run it with the checkout to measure as
the working directory: ``python -m`` imports that checkout's code, so two workers on two git
worktrees compare two commits in one session.

Requests (v1, kept for ``harness.compare`` inside old commits):
  ``{"op": "run"}``     one timed run on the current input; reply: elapsed, cpu, hash
  ``{"op": "judge"}``   the verdict of the runs so far against the stored baseline
  ``{"op": "quit"}``
Requests (v2, the optimization loop's judge):
  ``{"op": "input", "fields": {...}}``  load the dataset with these fields replaced (a fresh
                        seed, a check size), validate, prepare — untimed
  ``{"op": "time"}``    one run of the current input, replied to as soon as it ends (and the
                        device is synchronised): the caller times the round trip itself
  ``{"op": "save", "path": p}``  hash the last run's outputs, write them with the work counters
                        to ``p`` (the baseline format), collect garbage; reply: hash, work
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PROTOCOL = 2


def _send(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class Server:
    """One prepared benchmark answering requests."""

    def __init__(self, overrides: list[str]) -> None:
        from harness.bench.contract import RunContext
        from harness.bench.protocol import Measurement, reset_peak_memory, timed_call
        from harness.bench.runner import Benchmark
        from harness.config.compose import compose_checked
        from harness.sinks.console import Reporter

        cfg, valid = compose_checked(overrides)
        self.bench = Benchmark(cfg, valid, overrides, Reporter(stream=sys.stderr, rich=False))
        self.method, self.data, self.state = self.bench.setup()
        self.timing, self.rt = self.bench.spec.TIMING, self.bench.runtime
        self.m = Measurement(timing=self.timing)
        gc.collect()
        gc.freeze()  # see harness.bench.protocol.measure
        top = self.bench.top
        n_warm = top.bench.warmup if self.timing == "repeat" else 1
        for _ in range(n_warm):
            steps = top.bench.warmup_steps if self.timing == "train" else None
            ctx = RunContext(warmup=True, max_steps=steps, synchronize=self.rt.synchronize)
            seconds, _, res = timed_call(self._run, self.rt, ctx)
            self.m.warmup_s.append(seconds)
            if self.timing == "repeat":
                self.m.warmup_hashes.append(self.bench.digest(res.outputs))
        reset_peak_memory(self.rt)
        self.last: Any = None  # the last run's raw result (device outputs)
        self._context = RunContext

    def _run(self, ctx: Any) -> Any:
        return self.method.run(self.state, ctx)

    # ---- v1 ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from harness.bench.protocol import timed_call

        ctx = self._context(synchronize=self.rt.synchronize)
        seconds, cpu, self.m.result = timed_call(self._run, self.rt, ctx)
        self.m.elapsed.append(seconds)
        self.m.cpu_s.append(cpu)
        self.m.samples.extend(ctx.samples if self.timing == "train" and ctx.samples else [seconds])
        self.m.hashes.append(self.bench.digest(self.m.outputs))
        return {"event": "run", "elapsed": seconds, "cpu": cpu, "hash": self.m.hashes[-1]}

    def judge(self) -> dict[str, Any]:
        from harness.bench.protocol import peak_memory_mb

        self.m.peak_mem_mb = peak_memory_mb(self.rt)
        outcome = self.bench.conclude(self.method, self.data, self.m)
        return {
            "event": "judged",
            "verdict": outcome.verdict,
            "hash": outcome.output_hash,
            "metrics": outcome.metrics,
            "peak_mem_mb": self.m.peak_mem_mb,
        }

    # ---- v2 ----------------------------------------------------------------------------
    def input(self, fields: dict[str, Any]) -> dict[str, Any]:
        from harness.config.schema import check_ranges

        t0 = time.perf_counter()
        cfg = dataclasses.replace(self.bench.dataset_cfg, **fields)
        check_ranges(cfg, "dataset.")
        self.state = None
        self.data = None
        gc.collect()
        self.method, self.data, self.state = self.bench.setup(
            self.bench.load(cfg), method=self.method
        )
        gc.collect()
        return {"event": "input", "prepare_s": time.perf_counter() - t0}

    def time(self) -> dict[str, Any]:
        ctx = self._context(synchronize=self.rt.synchronize)
        self.rt.synchronize()
        t0 = time.perf_counter()
        try:
            out = self._run(ctx)
            self.rt.synchronize()
        finally:
            ctx.work.close()
        seconds = time.perf_counter() - t0
        self.last = (out, ctx)
        return {"event": "timed", "elapsed": seconds}

    def save(self, path: str) -> dict[str, Any]:
        from harness.bench import baseline
        from harness.bench.contract import as_result
        from harness.bench.protocol import to_host

        out, ctx = self.last
        result = to_host(as_result(out))
        result.work = dict(ctx.work.counts)
        digest = self.bench.digest(result.outputs)
        baseline.save(Path(path), digest, result.outputs, {}, result.work)
        self.last = None
        gc.collect()
        return {"event": "saved", "hash": digest, "work": result.work}


def serve(overrides: list[str]) -> None:
    """Set up one benchmark and serve requests until told to quit."""
    server = Server(overrides)
    bench = server.bench
    _send(
        {
            "event": "ready",
            "protocol": PROTOCOL,
            "commit": bench.env["commit"],
            "warmup_s": server.m.warmup_s,
            "timing": server.timing,
        }
    )
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "run":
            _send(server.run())
        elif op == "judge":
            _send(server.judge())
        elif op == "input":
            _send(server.input(dict(request.get("fields", {}))))
        elif op == "time":
            _send(server.time())
        elif op == "save":
            _send(server.save(request["path"]))
        elif op == "quit":
            break
        else:
            _send({"event": "error", "kind": "user", "message": f"unknown op {op!r}"})


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
