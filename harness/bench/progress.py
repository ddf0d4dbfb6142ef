"""Console progress of long work: trainers' epochs, and long phases that have no epochs.

:class:`EpochProgress` is fed by :meth:`RunContext.mark` (the harness already takes every
epoch's time there): one line per epoch at most every ``every_s`` seconds (always the first
and the last of a phase) with the epoch, s/epoch, the first few series values and the time
left of the planned training (at this phase's pace) — ``train epoch 12/400  0.21 s/epoch
elbo_train 150.4  ~1 min 21 s left``. A trainer tells the totals with
``ctx.plan(phase=last_step)``; warm-up lines are marked ``warm-up``.
:func:`phase` announces a long phase without epochs (tables, a posterior, the warm-up's data)
and its duration when it ends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping

MAX_VALUES = 4  # series values shown per line


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _value(v: float) -> str:
    return f"{v:.4g}"


class EpochProgress:
    """Rate-limited epoch lines for one run (``warmup``: no totals, lines say ``warm-up``)."""

    def __init__(self, say: Callable[[str], None], warmup: bool = False, every_s: float = 2.0):
        self.say, self.warmup, self.every_s = say, warmup, every_s
        self.last_step: dict[str, int] = {}
        self._seconds: dict[str, list[float]] = {}
        self._printed = -float("inf")

    def plan(self, **last_step: int) -> None:
        """The step each phase ends at (what ``mark`` is called with on its last epoch)."""
        self.last_step.update({k: int(v) for k, v in last_step.items()})

    def epoch(self, step: int, phase: str, seconds: float, values: Mapping[str, float]) -> None:
        times = self._seconds.setdefault(phase, [])
        times.append(seconds)
        last = None if self.warmup else self.last_step.get(phase)
        first, final = len(times) == 1, last is not None and step >= last
        now = time.monotonic()
        if not (first or final or now - self._printed >= self.every_s):
            return
        self._printed = now
        mean = sum(times) / len(times)
        head = f"{'warm-up: ' if self.warmup else ''}{phase + ' ' if phase else ''}epoch {step}"
        parts = [f"{head}/{last}" if last else head, f"{mean:.3g} s/epoch"]
        parts += [f"{k} {_value(v)}" for k, v in list(values.items())[:MAX_VALUES]]
        end = max(self.last_step.values(), default=0)  # the last planned phase's end
        if last is not None and step < end:
            parts.append(f"~{duration((end - step) * mean)} left")
        self.say("  ".join(parts))


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(label: str, say: Callable[[str], None] = _stderr) -> Iterator[None]:
    """Announce ``label …`` now and ``label: done in X`` at the end (a long phase that has no
    epochs to show: computing tables, a posterior, an evaluation)."""
    t0 = time.perf_counter()
    say(f"{label} …")
    yield
    say(f"{label}: done in {time.perf_counter() - t0:.1f} s")
