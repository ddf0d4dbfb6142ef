"""Interleaved A/B timing with two workers, and the noise-aware keep rule."""

from __future__ import annotations

import json
import math
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.bench.protocol import iqr


class WorkerFailed(Exception):
    """The worker crashed, hit a user error, or exceeded its time limit."""

    def __init__(self, status: str, message: str, log: str = "") -> None:
        super().__init__(message)
        self.status = status  # "crash" | "timeout" | "user"
        self.log = log


class Worker:
    """A ``harness.worker`` subprocess bound to one checkout (its working directory)."""

    def __init__(self, checkout: Path, overrides: list[str], log_path: Path, timeout_s: float):
        self.timeout_s = timeout_s
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.worker", *overrides],
            cwd=checkout,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.ready = self._read()
        if self.ready.get("event") != "ready":
            raise self._failure(self.ready)

    def _log_tail(self, n: int = 40) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _failure(self, reply: dict[str, Any]) -> WorkerFailed:
        kind = reply.get("kind", "crash")
        return WorkerFailed(kind, reply.get("message", "worker failed"), self._log_tail())

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(timeout=remaining):
                    self.kill()
                    raise WorkerFailed(
                        "timeout",
                        f"no answer within bench.timeout_s={self.timeout_s}",
                        self._log_tail(),
                    )
                line = self.proc.stdout.readline()
                if not line:  # EOF: the process died without a reply
                    code = self.proc.wait()
                    raise WorkerFailed("crash", f"worker exited with code {code}", self._log_tail())
                try:
                    return json.loads(line)
                except json.JSONDecodeError:  # a stray print on stdout: keep it in the log
                    self._log.write(line)
        finally:
            sel.close()

    def request(self, op: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            code = self.proc.wait()
            raise WorkerFailed(
                "crash", f"worker exited with code {code}", self._log_tail()
            ) from None
        reply = self._read()
        if reply.get("event") == "error":
            raise self._failure(reply)
        return reply

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Ask the worker to quit (no reply expected); kill it if it does not."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()
        self._log.close()


@dataclass
class Interleaved:
    """Timed runs of A and B, measured alternately (ABBA order) in one session."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    a_hashes: list[str] = field(default_factory=list)
    b_hashes: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)  # rounds measured by each worker pair


def split_rounds(rounds: int, pairs: int) -> list[int]:
    """``rounds`` spread as evenly as possible over ``pairs`` worker pairs."""
    return [rounds // pairs + (i < rounds % pairs) for i in range(pairs)]


def pair_slices(groups: list[int]) -> list[slice]:
    """The runs of each worker pair, in order, from the runs-per-pair counts."""
    ends = np.cumsum(groups).tolist()
    return [slice(end - n, end) for n, end in zip(groups, ends, strict=True)]


def interleave(a: Worker, b: Worker, rounds: int, done: Interleaved | None = None) -> Interleaved:
    """``rounds`` timed runs of each, alternating A B / B A to cancel drift."""
    res = done or Interleaved()
    for i in range(rounds):
        order = ((a, res.a, res.a_hashes), (b, res.b, res.b_hashes))
        for worker, times, hashes in order if i % 2 == 0 else order[::-1]:
            reply = worker.request("run")
            times.append(float(reply["elapsed"]))
            hashes.append(str(reply["hash"]))
    res.groups.append(rounds)
    return res


@dataclass(frozen=True)
class Decision:
    keep: bool
    median_a: float
    median_b: float
    speedup: float  # median_a / median_b
    gain: float  # (median_a - median_b) / median_a
    needed: float  # the gain (relative) that had to be beaten
    reason: str


def decide(
    a: list[float],
    b: list[float],
    min_gain: float,
    k_iqr: float,
    groups: list[int] | None = None,
) -> Decision:
    """Keep B only if its median beats A's by more than ``min_gain`` (relative) AND by more
    than ``k_iqr`` × the pooled IQR of the two samples (the measured run-to-run noise) AND,
    when the runs come from several worker pairs (``groups``: runs per pair, in order), if
    every pair on its own shows B faster by more than ``min_gain``."""
    med_a, med_b = float(np.median(a)), float(np.median(b))
    pooled = math.sqrt((iqr(a) ** 2 + iqr(b) ** 2) / 2)
    needed_abs = max(min_gain * med_a, k_iqr * pooled)
    gain = (med_a - med_b) / med_a
    keep = med_a - med_b > needed_abs
    needed = needed_abs / med_a
    pair_note = ""
    if groups and len(groups) > 1:
        gains = [1 - float(np.median(b[s]) / np.median(a[s])) for s in pair_slices(groups)]
        keep = keep and min(gains) > min_gain
        pair_note = ", per pair " + " ".join(f"{g:+.1%}" for g in gains)
    word = "faster" if keep else "not faster"
    reason = (
        f"{word}: {med_a / med_b:.3f}x, gain {gain:+.2%} vs needed {needed:.2%} "
        f"(min_gain {min_gain:.0%}, {k_iqr:g} x pooled IQR {pooled / med_a:.2%}{pair_note})"
    )
    return Decision(keep, med_a, med_b, med_a / med_b, gain, needed, reason)
