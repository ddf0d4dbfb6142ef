"""The run protocol: W warmup runs, R timed runs, every run hashed."""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.display import Reporter
from harness.runtime import Runtime


def iqr(values: list[float]) -> float:
    """Interquartile range (numpy's linear interpolation)."""
    q75, q25 = np.percentile(values, [75, 25])
    return float(q75 - q25)


@dataclass
class Measurement:
    """What the protocol measured; ``outputs`` are the last timed run's (on the host)."""

    warmup_s: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    warmup_hashes: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    peak_mem_mb: float = 0.0

    @property
    def median(self) -> float:
        return float(np.median(self.elapsed))

    @property
    def min(self) -> float:
        return float(np.min(self.elapsed))

    @property
    def iqr(self) -> float:
        return iqr(self.elapsed)

    @property
    def deterministic(self) -> bool:
        return len(set(self.hashes + self.warmup_hashes)) == 1


def _max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _host(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else v for k, v in outputs.items()}


def timed_call(
    run: Callable[[], Mapping[str, Any]], runtime: Runtime
) -> tuple[float, dict[str, Any]]:
    """One run, timed between device synchronisations; returns seconds and host outputs."""
    gc.collect()
    runtime.synchronize()
    t0 = time.perf_counter()
    out = run()
    runtime.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, _host(out)


def peak_memory_mb(runtime: Runtime) -> float:
    """CUDA max allocated since the last reset, or the process's max RSS on CPU."""
    if runtime.is_cuda:
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return _max_rss_mb()


def measure(
    run: Callable[[], Mapping[str, Any]],
    runtime: Runtime,
    warmup: int,
    repeats: int,
    digest: Callable[[Mapping[str, Any]], str],
    reporter: Reporter,
) -> Measurement:
    """Run ``run`` warmup + repeats times; time the timed runs with device synchronisation."""
    m = Measurement()
    # objects alive now (modules, data, prepared state) leave the collector's view for good,
    # so the collection before each run (and the next benchmark's in the same process, as in
    # harness.tune) scans only what is new
    gc.collect()
    gc.freeze()
    reporter.start_runs(warmup + repeats, "benchmark")
    try:
        for i in range(warmup):
            seconds, host = timed_call(run, runtime)
            m.warmup_s.append(seconds)
            m.warmup_hashes.append(digest(host))
            reporter.run_done("warmup", i + 1, warmup, seconds, m.warmup_hashes[-1])
        if runtime.is_cuda:
            torch.cuda.reset_peak_memory_stats(runtime.device)
        for i in range(repeats):
            seconds, m.outputs = timed_call(run, runtime)
            m.elapsed.append(seconds)
            m.hashes.append(digest(m.outputs))
            reporter.run_done("run", i + 1, repeats, seconds, m.hashes[-1])
    finally:
        reporter.stop_runs()
    m.peak_mem_mb = peak_memory_mb(runtime)
    return m
