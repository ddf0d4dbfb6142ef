"""The run protocols, by the method's declared TIMING.

``repeat`` (solvers): W untimed warm-up runs, then R timed runs; the samples are the runs'
times, ``elapsed_s`` their median. ``train`` (trainers): an untimed warm-up of
``bench.warmup_steps`` steps (compile, allocation, caches), then ONE timed training; its wall
time (checkpoint writes excluded, reported as ``checkpoint_s``) is ``elapsed_s`` and its
per-epoch times (``ctx.mark``) are the samples for min and IQR. Every run is hashed.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.bench.contract import RunContext, RunResult, as_result
from harness.bench.hashing import host
from harness.bench.runtime import Runtime
from harness.sinks.console import Reporter


def iqr(values: list[float]) -> float:
    """Interquartile range (numpy's linear interpolation); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    q75, q25 = np.percentile(values, [75, 25])
    return float(q75 - q25)


@dataclass
class Measurement:
    """What the protocol measured; ``result`` is the last timed run's (outputs on the host)."""

    timing: str = "repeat"
    warmup_s: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)  # timed runs (train: one)
    samples: list[float] = field(default_factory=list)  # repeat: = elapsed; train: per epoch
    cpu_s: list[float] = field(default_factory=list)  # process CPU time of each timed run
    hashes: list[str] = field(default_factory=list)
    warmup_hashes: list[str] = field(default_factory=list)
    result: RunResult = field(default_factory=lambda: RunResult(outputs={}))
    peak_mem_mb: float = 0.0
    checkpoint_s: float = 0.0
    resumed: str = ""  # "epoch/batch/step" a resumed training started at

    @property
    def outputs(self) -> dict[str, Any]:
        return self.result.outputs

    @property
    def median(self) -> float:
        return float(np.median(self.elapsed))

    @property
    def min(self) -> float:
        return float(np.min(self.samples or self.elapsed))

    @property
    def iqr(self) -> float:
        return iqr(self.samples or self.elapsed)

    @property
    def deterministic(self) -> bool:
        """Bitwise: all timed runs (and, for ``repeat``, the warm-ups) hash the same."""
        hashes = self.hashes + [h for h in self.warmup_hashes if h != "-"]
        return len(set(hashes)) <= 1


class Tampered(Exception):
    """Read-only code or the work counters were interfered with during a run."""


def _max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def to_host(result: RunResult) -> RunResult:
    """The result with its outputs on the host (numpy / scipy CSR)."""
    result.outputs = {k: host(v) for k, v in result.outputs.items()}
    return result


def host_copy(result: RunResult) -> RunResult:
    """The result with its outputs copied to fresh host arrays: nothing the method still holds
    (a thread, a side stream, a buffer it reuses) can change them afterwards."""
    outputs = {}
    for name, value in result.outputs.items():
        value = host(value)
        outputs[name] = value.copy() if hasattr(value, "copy") else np.array(value)
    result.outputs = outputs
    return result


def timed_call(
    run: Callable[[RunContext], Any], runtime: Runtime, ctx: RunContext
) -> tuple[float, float, RunResult]:
    """One run, timed between device synchronisations: wall seconds (checkpoint writes
    excluded), process CPU seconds, and the result with host outputs and the work counted."""
    gc.collect()
    runtime.synchronize()
    c0 = time.process_time()
    t0 = time.perf_counter()
    ctx.started = t0
    try:
        out = run(ctx)
        runtime.synchronize()
        result = host_copy(as_result(out))  # inside the timer: see host_copy
        seconds = time.perf_counter() - t0 - ctx.checkpoint.seconds
        cpu = time.process_time() - c0
    finally:
        ctx.work.close()
    if ctx.work.tampered:
        raise Tampered(ctx.work.tampered)
    result.work = ctx.work.counts
    result.series = [*ctx.series, *result.series]
    return seconds, cpu, result


def peak_memory_mb(runtime: Runtime) -> float:
    """CUDA max allocated since the last reset, or the process's max RSS on CPU."""
    if runtime.is_cuda:
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return _max_rss_mb()


def reset_peak_memory(runtime: Runtime) -> None:
    """Start the peak-memory count afresh (CUDA; the process RSS peak cannot be reset)."""
    if runtime.is_cuda:
        torch.cuda.reset_peak_memory_stats(runtime.device)


def warm_up(
    run: Callable[[RunContext], Any],
    runtime: Runtime,
    m: Measurement,
    warmup: int,
    warmup_steps: int,
    digest: Callable[[dict[str, Any]], str],
    reporter: Reporter | None = None,
    warm_run: Callable[[RunContext], Any] | None = None,
) -> None:
    """The untimed warm-ups of ``m.timing`` (module doc), recorded in ``m``: ``warmup`` runs
    (``repeat``) or one run of ``warmup_steps`` steps (``train``). The benchmark and the loop's
    worker both warm up through this function."""
    n_warm = warmup if m.timing == "repeat" else 1
    say = reporter.info if reporter is not None else None  # the loop's workers stay quiet
    if say is not None:
        say(
            f"warm-up: {warmup_steps} training steps (untimed) …"
            if m.timing == "train"
            else f"warm-up: {n_warm} untimed run{'s' if n_warm > 1 else ''} …"
        )
    for i in range(n_warm):
        steps = warmup_steps if m.timing == "train" else None
        ctx = RunContext(warmup=True, max_steps=steps, synchronize=runtime.synchronize, say=say)
        seconds, _, res = timed_call(warm_run or run, runtime, ctx)
        m.warmup_s.append(seconds)
        # a trainer's warm-up trains a few steps, a drawn input is another input: neither
        # output is the task's
        m.warmup_hashes.append(
            digest(res.outputs) if m.timing == "repeat" and warm_run is None else "-"
        )
        if reporter is not None:
            reporter.run_done("warmup", i + 1, n_warm, seconds, m.warmup_hashes[-1])


def measure(
    run: Callable[[RunContext], Any],
    runtime: Runtime,
    timing: str,
    warmup: int,
    repeats: int,
    warmup_steps: int,
    digest: Callable[[dict[str, Any]], str],
    reporter: Reporter,
    checkpoint: Any = None,
    listener: Callable[[str, int, float], None] | None = None,
    warm_run: Callable[[RunContext], Any] | None = None,
    warm_done: Callable[[], None] = lambda: None,
) -> Measurement:
    """Run the protocol of ``timing`` (module doc); every run is hashed. ``warm_run``: the
    warm-ups run on an input of their own (then ``warm_done`` releases it), so nothing the
    warm-up leaves behind — a cache keyed on the input — serves the timed runs."""
    m = Measurement(timing=timing)
    # objects alive now (modules, data, prepared state) leave the collector's view for good,
    # so the collection before each run (and the next benchmark's in the same process, as in
    # harness.tune) scans only what is new
    gc.collect()
    gc.freeze()
    n_warm, n_timed = (warmup, repeats) if timing == "repeat" else (1, 1)
    reporter.start_runs(n_warm + n_timed, "benchmark")
    sync = runtime.synchronize
    try:
        warm_up(run, runtime, m, warmup, warmup_steps, digest, reporter, warm_run)
        warm_done()
        reset_peak_memory(runtime)
        reporter.info(
            "timed training …"
            if timing == "train"
            else f"{n_timed} timed run{'s' if n_timed > 1 else ''} …"
        )
        for i in range(n_timed):
            ctx = RunContext(
                checkpoint=checkpoint, synchronize=sync, listener=listener, say=reporter.info
            )
            seconds, cpu, m.result = timed_call(run, runtime, ctx)
            m.elapsed.append(seconds)
            m.cpu_s.append(cpu)
            m.checkpoint_s += ctx.checkpoint.seconds
            if ctx.checkpoint.resumed_from is not None:
                m.resumed = "/".join(str(v) for v in ctx.checkpoint.resumed_from)
            m.samples.extend(ctx.samples if timing == "train" and ctx.samples else [seconds])
            m.hashes.append(digest(m.result.outputs))
            reporter.run_done("run", i + 1, n_timed, seconds, m.hashes[-1])
    finally:
        reporter.stop_runs()
    m.peak_mem_mb = peak_memory_mb(runtime)
    return m
