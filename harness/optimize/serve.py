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
  ``{"op": "time"}``    one run of the current input, its outputs copied to the host, replied
                        to as soon as that ends (the device synchronised): the caller times
                        the round trip itself
  ``{"op": "save", "path": p}``  write the last run's raw outputs with the work counters to
                        ``p`` (npz, nothing that executes on load), collect garbage; reply: hash
                        (for information: the judge computes its own from the file), work
Start-up (v5): with ``HARNESS_WORKER_LAZY=1`` in its environment the worker only composes the
config, seals the read-only code and builds the method (its modules imported), then reports
ready: no input is loaded or prepared and nothing runs until the first ``prepare`` — the loop's
warm round is its warm-up. Workers of older commits ignore the variable and start as before.

Requests (v4):
  ``{"op": "prepare", "path": p, "sha256": d}``  read the input the judge wrote to ``p`` (a
                        pickle, checked against its SHA-256 before it is loaded), then
                        ``check_inputs`` + ``prepare`` it — all inside the request, which the
                        caller times like ``time``: the worker never holds a fresh input outside
                        a timed request, so no code of its can work on it untimed

A worker refuses to report (``{"event": "error", "kind": "tampered"}``) when its read-only code
or torch's hooked entry points no longer match what they were (:mod:`harness.bench.seal`), or
when a work count was booked from outside the counters' hooks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PROTOCOL = 5
LAZY_ENV = "HARNESS_WORKER_LAZY"


def _send(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class Server:
    """One prepared benchmark answering requests."""

    def __init__(self, overrides: list[str], lazy: bool = False, seal: Any = None) -> None:
        """``seal``: taken already (a worker forked from a template, :mod:`.template`)."""
        from harness.bench.contract import RunContext
        from harness.bench.protocol import Measurement, reset_peak_memory, warm_up
        from harness.bench.runner import Benchmark
        from harness.bench.seal import Seal, project_root
        from harness.config.compose import compose_checked
        from harness.sinks.console import Reporter

        cfg, valid = compose_checked(overrides)
        self.bench = Benchmark(cfg, valid, overrides, Reporter(stream=sys.stderr, rich=False))
        # before the method (and its editable modules) is imported: see harness.bench.seal
        self.seal = seal or Seal.for_files(project_root(), valid.method.readonly)
        self.lazy = lazy
        if lazy:  # no input until the first prepare request (module doc)
            self.method, self.data, self.state = self.bench.build(), None, None
        else:
            self.method, self.data, self.state = self.bench.setup()
        self.timing, self.rt = self.bench.spec.TIMING, self.bench.runtime
        self.m = Measurement(timing=self.timing)
        gc.collect()
        gc.freeze()  # see harness.bench.protocol.measure
        top = self.bench.top
        if not lazy:  # the benchmark's own warm-up (harness.bench.protocol), start-up input
            warm_up(self._run, self.rt, self.m, top.bench.warmup, top.bench.warmup_steps,
                    self.bench.digest)  # fmt: skip
        reset_peak_memory(self.rt)
        self.last: Any = None  # the last run's raw result (device outputs)
        self._context = RunContext

    def _run(self, ctx: Any) -> Any:
        if self.state is None:
            raise RuntimeError("no input prepared yet: a lazy worker's first request is prepare")
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

    def prepare(self, path: str, sha256: str) -> dict[str, Any]:
        """Load the judge's input file, check and prepare it (the caller times this request)."""
        import hashlib
        import pickle

        self.state = self.data = None
        gc.collect()
        self.rt.synchronize()
        t0 = time.perf_counter()
        blob = Path(path).read_bytes()
        if hashlib.sha256(blob).hexdigest() != sha256:
            raise RuntimeError(f"input file {path} does not match the judge's digest")
        self.data = pickle.loads(blob)  # written by the judge, digest checked: trusted
        self.method.check_inputs(self.data)
        self.state = self.method.prepare(self.data)
        self.rt.synchronize()
        return {"event": "prepared", "elapsed": time.perf_counter() - t0}

    def time(self) -> dict[str, Any]:
        """One run through the benchmark's own timed call (``harness.bench.protocol``): the
        outputs are copied to the host inside the timed region, and a counter booked from
        outside its hooks raises ``Tampered``."""
        from harness.bench.protocol import timed_call

        ctx = self._context(synchronize=self.rt.synchronize)
        seconds, _, self.last = timed_call(self._run, self.rt, ctx)
        return {"event": "timed", "elapsed": seconds}

    def save(self, path: str) -> dict[str, Any]:
        """Write the last run's outputs — unless read-only code was changed since start-up
        (checked here, outside the timed requests: a patch made during a run persists)."""
        from harness.bench import baseline
        from harness.bench.protocol import Tampered

        problems = self.seal.problems()
        if problems:
            raise Tampered("; ".join(problems[:3]))
        result = self.last
        digest = self.bench.digest(result.outputs)
        baseline.save(Path(path), digest, result.outputs, {}, result.work)
        self.last = None
        gc.collect()
        return {"event": "saved", "hash": digest, "work": result.work}


def serve(overrides: list[str], seal: Any = None) -> None:
    """Set up one benchmark and serve requests until told to quit."""
    import os

    server = Server(overrides, lazy=os.environ.get(LAZY_ENV) == "1", seal=seal)
    bench = server.bench
    _send(
        {
            "event": "ready",
            "protocol": PROTOCOL,
            "commit": bench.env["commit"],
            "warmup_s": server.m.warmup_s,
            "timing": server.timing,
            "lazy": server.lazy,
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
        elif op == "prepare":
            _send(server.prepare(str(request["path"]), str(request["sha256"])))
        elif op == "time":
            _send(server.time())
        elif op == "save":
            _send(server.save(request["path"]))
        elif op == "quit":
            break
        else:
            _send({"event": "error", "kind": "user", "message": f"unknown op {op!r}"})


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the process that started it dies (a worker kept stopped
    between requests would otherwise outlive a killed judge)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def main(seal: Any = None) -> None:
    """The worker's entry point (``seal``: a forked worker's, taken by its template)."""
    import os

    from harness.bench.protocol import Tampered
    from harness.core.errors import UserError

    if sys.platform.startswith("linux"):
        _die_with_parent()
    template = seal is None and os.environ.get("HARNESS_WORKER_TEMPLATE") == "1"
    try:
        if template:  # a template that forks workers (harness.optimize.template)
            from harness.optimize.template import serve_template

            serve_template(sys.argv[1:])
        else:
            serve(sys.argv[1:], seal)
    except UserError as exc:
        _send({"event": "error", "kind": "user", "message": str(exc)})
        sys.exit(2)
    except Tampered as exc:
        _send({"event": "error", "kind": "tampered", "message": f"tampered: {exc}"})
        sys.exit(3)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _send({"event": "error", "kind": "crash", "message": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
