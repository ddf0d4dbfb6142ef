"""Console output: a rich progress display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Reporter:
    """Stage messages and per-run progress; also keeps a plain-text log for MLflow."""

    def __init__(self, stream: TextIO | None = None, rich: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.rich = self.stream.isatty() if rich is None else rich
        self.log_lines: list[str] = []
        self._t0 = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def _emit(self, text: str) -> None:
        stamp = f"[{time.perf_counter() - self._t0:7.2f}s]"
        self.log_lines.append(f"{stamp} {text}")
        if self._progress is not None:
            self._progress.console.print(f"{stamp} {text}", highlight=False)
        else:
            print(f"{stamp} {text}", file=self.stream, flush=True)

    def info(self, text: str) -> None:
        self._emit(text)

    def start_runs(self, total: int, label: str) -> None:
        """Begin a progress bar over ``total`` warmup + timed runs."""
        if not self.rich:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def run_done(self, kind: str, index: int, count: int, seconds: float, digest: str) -> None:
        self._emit(f"{kind} {index}/{count}: {seconds:.4f} s  hash {digest}")
        if self._progress is not None:
            self._progress.advance(self._task)

    def stop_runs(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def text(self) -> str:
        return "\n".join(self.log_lines) + "\n"


def summary_lines(fields: list[tuple[str, Any]]) -> list[str]:
    """Aligned ``key : value`` lines for the end-of-run summary."""
    width = max(len(k) for k, _ in fields)
    return [f"  {k.ljust(width)} : {v}" for k, v in fields]


def benchmark_summary(rec: Any) -> str:
    """The end-of-run summary of a run's record (``harness.sinks.runrecord.RunRecord``)."""
    who, m = rec.identity, rec.timings
    fields: list[tuple[str, Any]] = [
        ("method", f"{who.method}  dataset {who.dataset}"),
        ("hardware", f"{who.hardware}  ({who.device_name}, {who.dtype})"),
        ("commit", f"{who.commit[:12] or '-'}{' (dirty)' if who.dirty else ''}"),
    ]
    if m and m.elapsed:
        unit = "epochs" if m.timing == "train" else "runs"
        fields += [
            (
                "elapsed_s",
                f"{m.median:.4f}  ({m.timing}: min {m.min:.4f}, IQR {m.iqr:.4f} over "
                f"{m.n_samples} {unit})",
            ),
            ("warmup_s", f"{sum(m.warmup_s):.4f}"),
            ("peak_mem_mb", f"{m.peak_mem_mb:.1f}"),
        ]
        if m.resumed:
            fields.append(("resumed", f"from epoch/batch/step {m.resumed}"))
    fields += [
        ("output_hash", rec.output_hash or "-"),
        ("verdict", rec.verdict or "-"),
        ("status", rec.status),
    ]
    fields += [(k, f"{v:.6g}") for k, v in sorted(rec.metrics.items())]
    if rec.mlflow_run_id:
        fields.append(("mlflow_run_id", rec.mlflow_run_id))
    if rec.mlflow_url:
        local = rec.tracking.uri.startswith(("sqlite:", "file:")) or "://" not in rec.tracking.uri
        serve = f"  (serve it: mlflow ui --backend-store-uri {rec.tracking.uri})" if local else ""
        fields.append(("mlflow_view", rec.mlflow_url + serve))
    return "\n".join(["", "== harness summary ==", *summary_lines(fields)])
