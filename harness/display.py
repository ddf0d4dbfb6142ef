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
