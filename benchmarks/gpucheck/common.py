"""What every check shares: the pack's settings, a result row, one harness benchmark run in
this process (``harness.bench.runner.Benchmark``: the data flow of ``python -m harness``), and
the peak memory of a code region on the device (CUDA allocator peak, or on a CPU the
process's resident high-water mark, reset through ``/proc/self/clear_refs``)."""

from __future__ import annotations

import contextlib
import gc
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OK, WARN, FAIL, SKIP, INFO = "ok", "warn", "FAIL", "skip", "info"


@dataclass
class Pack:
    """The command line, resolved: device, hardware profile, sizes, where things go."""

    device: str  # "cuda" | "cpu"
    hardware: str  # the profile of the device runs (h100, auto, ..., cpu)
    sizes: Any  # gpucheck.sizes.Sizes
    out: Path
    log: Any  # a text stream for the harness's progress lines
    variants: tuple[str, ...] = ("float32", "bf16", "compile")

    @property
    def work(self) -> Path:
        return self.out / "work"

    def common(self, hardware: str | None = None, threads: bool = True) -> list[str]:
        """Overrides of every run: results, baselines and caches under the pack's work dir
        (``threads``: the sizes' thread count, where they set one)."""
        args = [f"hardware={hardware or self.hardware}", f"paths.results={self.work}",
                "tracking.mlflow=false"]  # fmt: skip
        n = getattr(self.sizes, "threads", 0)
        return args + ([f"hardware.threads={n}"] if threads and n else [])


@dataclass
class Row:
    """One line of a check's table."""

    check: str
    method: str
    variant: str
    device: str
    status: str = OK
    figures: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # JSON only (not in the table)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "method": self.method,
            "variant": self.variant,
            "device": self.device,
            "status": self.status,
            **self.figures,
            "note": self.note,
            "detail": self.detail,
        }


@dataclass
class Run:
    """One benchmark: the harness's Benchmark and Outcome, and the method object it built."""

    bench: Any
    outcome: Any
    method: Any
    wall_s: float

    @property
    def m(self) -> Any:
        return self.outcome.measurement

    def figures(self) -> dict[str, Any]:
        """The table's timing figures of this run."""
        m = self.m
        return {
            "elapsed_s": round(m.median, 4),
            "warmup_s": round(sum(m.warmup_s), 4),
            "peak_mb": round(m.peak_mem_mb, 1),
            "hash": self.outcome.output_hash,
            "verdict": self.outcome.verdict,
        }


def run_bench(pack: Pack, overrides: list[str], hardware: str | None = None) -> Run:
    """``python -m harness <overrides>`` in this process, nothing recorded (no results.tsv
    row, no MLflow run); a baseline is stored or compared as ``bench.baseline`` says."""
    import torch

    from harness.bench.runner import Benchmark
    from harness.config.compose import compose_checked
    from harness.sinks.console import Reporter

    args = [*pack.common(hardware), *overrides]
    print(f"--- python -m harness {' '.join(args)}", file=pack.log, flush=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(pack.log):  # the methods' own progress lines
        cfg, valid = compose_checked(args)
        bench = Benchmark(cfg, valid, args, Reporter(stream=pack.log, rich=False))
        outcome = bench.execute()
    run = Run(bench, outcome, bench.build(), time.perf_counter() - t0)
    print(f"--- wall {run.wall_s:.1f} s", file=pack.log, flush=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return run


def guarded(pack: Pack, rows: list[Row], row: Row, fn: Callable[[Row], None]) -> None:
    """Run ``fn(row)`` (it fills the row); an exception makes the row a failure, not the
    pack's end (the traceback goes to the log). The row is appended either way."""
    try:
        fn(row)
    except Exception as exc:  # noqa: BLE001 - a check's crash is a result
        row.status = FAIL
        row.note = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        print(traceback.format_exc(), file=pack.log, flush=True)
    rows.append(row)


def _proc_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Peak:
    """Bytes a region added at its peak (filled when the region ends)."""

    bytes: int = 0
    source: str = ""


@contextlib.contextmanager
def device_peak(device: Any) -> Iterator[Peak]:
    """The peak memory the region allocated above what was in use when it started: on CUDA
    ``max_memory_allocated`` after ``reset_peak_memory_stats``; on a CPU the resident
    high-water mark (VmHWM) after resetting it (``/proc/self/clear_refs`` 5), minus VmRSS."""
    import torch

    peak = Peak()
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        torch.cuda.synchronize(device)
        peak.bytes = torch.cuda.max_memory_allocated(device) - before
        peak.source = "cuda max_memory_allocated"
        return
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _proc_kb("VmRSS:")
    yield peak
    peak.bytes = _proc_kb("VmHWM:") - before
    peak.source = "VmHWM - VmRSS (cpu)"


def free_memory(device: Any) -> int:
    """Free bytes on the device: CUDA ``mem_get_info``, or the host's MemAvailable (the
    harness methods' own reading, ``methods.rctd.memory.free_bytes``)."""
    from methods.rctd.memory import free_bytes

    return free_bytes(device)


def mb(n: float) -> float:
    return round(n / 2**20, 1)
