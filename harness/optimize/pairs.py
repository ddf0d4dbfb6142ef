"""Worker pairs until the sequential rule decides — the one loop behind ``loop try`` and
``compare``.

Each pair is a fresh reference worker (the kept commit, or A) and a fresh candidate worker
(or B), started in alternating order; a ``play`` function runs the pair's rounds and returns
their paired timings. After each pair the rule (:mod:`harness.optimize.decide`) keeps,
discards or asks for another pair; ``max_seconds`` bounds the whole session.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.optimize.decide import Decision, Rule, decide
from harness.optimize.workers import PairLog, Timing, Worker

Start = Callable[[int], Worker]
Release = Callable[[Worker], None]


def _close(worker: Worker) -> None:
    worker.close()


@dataclass
class Session:
    """The pairs played so far and where the time went."""

    pairs: list[PairLog] = field(default_factory=list)
    startup_s: float = 0.0  # starting (or forking) the workers: imports, config, seal
    warmup_s: float = 0.0  # the untimed warm round of every pair (``loop.warm_round``)
    inputs_s: float = 0.0
    runs_s: float = 0.0
    reruns: int = 0  # timed rounds run again because a busy neighbour disturbed them
    reruns_this_pair: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def breakdown(self) -> str:
        spent = self.startup_s + self.warmup_s + self.inputs_s + self.runs_s
        other = max(0.0, self.seconds - spent)
        total = max(self.seconds, 1e-9)
        return (
            f"{self.seconds:.0f} s: worker start-up {self.startup_s:.0f} s "
            f"({self.startup_s / total:.0%}), warm-up rounds {self.warmup_s:.0f} s "
            f"({self.warmup_s / total:.0%}), inputs {self.inputs_s:.0f} s, "
            f"timed runs {self.runs_s:.0f} s, other {other:.0f} s"
            + (f"; {self.reruns} disturbed round(s) run again" if self.reruns else "")
        )

    def disturbed(self, timings: tuple[Timing, ...], limit: float, max_reruns: int) -> bool:
        """Whether this round must be run again: a side waited for a CPU longer than ``limit``
        of its wall time, and the pair has re-runs left (``loop.disturbed``, ``max_reruns``)."""
        if limit >= 1 or self.reruns_this_pair >= max_reruns:
            return False
        if any(t.disturbed > limit for t in timings):  # NaN (no schedstat): never
            self.reruns += 1
            self.reruns_this_pair += 1
            return True
        return False


def fresh_draw() -> int:
    """A dataset seed no run has seen (drawn from the OS's entropy, never repeated in practice)."""
    return random.SystemRandom().randrange(1, 2**31 - 1)


def run_pairs(
    start_ref: Start,
    start_cand: Start,
    play: Callable[[int, Worker, Worker, Session], PairLog],
    rule: Rule,
    clock: str,
    max_seconds: float,
    release_ref: Release = _close,
    session: Session | None = None,
) -> tuple[Decision, Session]:
    """Play pairs until the rule decides (see module doc)."""
    session = session or Session()
    while True:
        p = len(session.pairs)
        ref = cand = None
        try:
            t0 = time.monotonic()
            if p % 2 == 0:
                ref, cand = start_ref(p), start_cand(p)
            else:
                cand = start_cand(p)
                ref = start_ref(p)
            session.startup_s += time.monotonic() - t0
            session.reruns_this_pair = 0
            session.pairs.append(play(p, ref, cand, session))
        finally:
            if cand is not None:
                cand.close()
            if ref is not None:
                release_ref(ref)
        stats = [log.mean_log_ratio(clock) for log in session.pairs]
        stats = [s for s in stats if math.isfinite(s)]
        over = session.seconds > max_seconds
        decision = decide(stats, rule, out_of_budget=over)
        if decision.action != "continue":
            return decision, session


def describe_pairs(session: Session, clock: str) -> dict[str, Any]:
    """Per-pair figures for the record: mean candidate/reference ratios."""
    return {
        "pair_ratios": [round(math.exp(p.mean_log_ratio(clock)), 4) for p in session.pairs],
        "rounds": sum(len(p.kept) for p in session.pairs),
    }
