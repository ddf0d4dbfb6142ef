"""A/B worker processes: one ``harness.worker`` per commit, timed from outside.

The caller (the judge) measures each timed request itself: the wall time of the round trip
(the worker replies as soon as the run ends, device synchronised) and the CPU time the kernel
accounted to the worker's threads in between (``/proc/<pid>/task/*/schedstat``, ns). A
candidate's code runs inside its worker and could bend any clock there; it cannot bend these.

Workers can be started under a command prefix (CPU pinning with ``taskset``, ASLR off with
``setarch -R``) and with extra environment (malloc settings, thread counts): the measures that
shrink the per-process bias two processes of the same code otherwise show for their whole life.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class WorkerFailed(Exception):
    """The worker crashed, hit a user error, or exceeded its time limit."""

    def __init__(self, status: str, message: str, log: str = "") -> None:
        super().__init__(message)
        self.status = status  # "crash" | "timeout" | "user"
        self.log = log


@dataclass(frozen=True)
class Launch:
    """How workers are started: a command prefix and extra environment."""

    prefix: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def command(self, args: Sequence[str]) -> list[str]:
        return [*self.prefix, *args]


def system_busy_s() -> float:
    """CPU seconds all processors spent busy since boot (``/proc/stat``; NaN without it)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def sched_ns(pid: int) -> tuple[int, int] | None:
    """Nanoseconds all threads of ``pid`` ran on a CPU, and waited runnable for one (the run
    queue: time a busy neighbour took from them), as the kernel accounts them (None where
    /proc has no schedstat)."""
    run = wait = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                fields = fh.read().split()
            run += int(fields[0])
            wait += int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return run, wait


def cpu_ns(pid: int) -> int | None:
    """Nanoseconds of CPU time the kernel accounted to all threads of ``pid`` (None where
    /proc has no schedstat)."""
    got = sched_ns(pid)
    return None if got is None else got[0]


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid`` (a data loader's workers, say), from /proc."""
    found, todo, seen = [], [pid], {pid}
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    todo.append(kid)
                    found.append(kid)
    return found


def tree_cpu_ns(pid: int) -> tuple[int, int, int] | None:
    """:func:`cpu_ns` of ``pid``; that plus its live descendants' (a data loader's workers);
    and the nanoseconds they all waited runnable for a CPU. None where /proc has no
    schedstat."""
    own = sched_ns(pid)
    if own is None:
        return None
    run, wait = own
    for kid in descendants(pid):
        got = sched_ns(kid) or (0, 0)
        run, wait = run + got[0], wait + got[1]
    return own[0], run, wait


class Worker:
    """A ``harness.worker`` subprocess bound to one checkout: run from it (its working
    directory) and importing only its code (isolated mode, :mod:`.isolation`)."""

    def __init__(
        self,
        checkout: Path,
        overrides: list[str],
        log_path: Path,
        timeout_s: float,
        launch: Launch = Launch(),
        suspend: bool = False,
        lazy: bool = False,
        expect: str = "ready",
        cgroup: Any = None,
    ) -> None:
        """``suspend``: keep the worker's process group stopped (SIGSTOP) between requests, so
        nothing it started — a thread, a child process — runs while it is not being served
        (while the other side is timed, in particular). ``lazy``: ask it to start without an
        input (``harness.optimize.serve``, protocol 5); ``self.lazy`` says whether it did.
        ``expect``: the event its first line must be (``template``: :mod:`.template`).
        ``cgroup``: a :class:`.cgroup.Cgroup` the worker joins before it execs Python: frozen
        between requests, emptied and removed at close."""
        self.timeout_s = timeout_s
        self.suspend = suspend
        self.cgroup = cgroup
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        from harness.optimize.isolation import isolated_command

        env = {**os.environ, **dict(launch.env)}
        if lazy:
            env["HARNESS_WORKER_LAZY"] = "1"
        self.started = time.monotonic()
        join = cgroup.prefix() if cgroup is not None else ()
        self.proc = subprocess.Popen(
            [*join, *launch.command(isolated_command(checkout, "harness.worker", overrides))],
            cwd=checkout,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,  # its own process group: suspended and ended as one
        )
        self._handshake(expect)

    @classmethod
    def attach(
        cls, proc: Any, log_path: Path, timeout_s: float, suspend: bool, cgroup: Any = None
    ) -> Worker:
        """A worker started elsewhere (forked by a template) speaking on ``proc``'s pipes."""
        self = cls.__new__(cls)
        self.timeout_s, self.suspend, self.log_path = timeout_s, suspend, log_path
        self.cgroup = cgroup
        self._log = open(log_path, "a")  # noqa: SIM115 - closed in close()
        self.started = time.monotonic()
        self.proc = proc
        self._handshake("ready")
        return self

    def _handshake(self, expect: str) -> None:
        try:
            self.ready = self._read()
            if self.ready.get("event") != expect:
                raise self._failure(self.ready)
        except BaseException:  # never returned, so never closed: end it and its cgroup here
            with contextlib.suppress(Exception):
                self.kill()
            raise
        self._pause()
        self.startup_s = time.monotonic() - self.started
        self.protocol = int(self.ready.get("protocol", 1))
        self.lazy = bool(self.ready.get("lazy", False))

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

    def _group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _pause(self) -> None:
        if self.suspend:
            self._group(signal.SIGSTOP)
        if self.cgroup is not None:  # and whatever it started, in any session
            self.cgroup.freeze()

    def _resume(self) -> None:
        if self.cgroup is not None:
            self.cgroup.thaw()
        if self.suspend:
            self._group(signal.SIGCONT)

    def leftovers(self) -> list[int]:
        """Processes in the worker's cgroup outside its process group: ones it started in
        another session or daemonised (empty without a cgroup)."""
        if self.cgroup is None:
            return []
        from harness.optimize.cgroup import pgid

        return [p for p in self.cgroup.pids() if pgid(p) not in (self.proc.pid, None)]

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._resume()
        try:
            return self._exchange(op, args)
        finally:
            self._pause()

    def _exchange(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
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

    def timed(self, op: str = "time", **args: Any) -> Timing:
        """One timed request, measured from outside: wall seconds of the round trip and the
        CPU seconds the kernel accounted to the worker meanwhile."""
        self._resume()  # thawed and stopped again off the clock: both cost the judge time
        try:
            before = tree_cpu_ns(self.proc.pid)
            b0 = system_busy_s()
            t0 = time.perf_counter()
            reply = self._exchange(op, args)
            wall = time.perf_counter() - t0
            b1 = system_busy_s()
            after = tree_cpu_ns(self.proc.pid)
        finally:
            self._pause()
        if before is None or after is None:
            cpu = tree = waited = float("nan")
        else:
            cpu, tree, waited = ((a - b) / 1e9 for a, b in zip(after, before, strict=True))
        return Timing(
            wall=wall,
            cpu=cpu,
            reported=float(reply.get("elapsed", float("nan"))),
            foreign=max(0.0, (b1 - b0) - tree),
            waited=waited,
        )

    def kill(self) -> None:
        self._group(signal.SIGKILL)  # the worker and whatever it left in its group
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.cgroup is not None:  # and in its cgroup, whatever session
            self.cgroup.remove()

    def close(self) -> None:
        """Ask the worker to quit (no reply expected); kill it if it does not."""
        if self.proc.poll() is None:
            self._resume()
            self._group(signal.SIGCONT)
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self._log.close()


@dataclass(frozen=True)
class Timing:
    """One timed run as the judge measured it (``reported``: the worker's own figure;
    ``foreign``: CPU seconds the rest of the machine — all but the worker and its descendants —
    was busy meanwhile; ``waited``: seconds the worker's threads waited runnable for a CPU)."""

    wall: float
    cpu: float
    reported: float = float("nan")
    foreign: float = float("nan")
    waited: float = float("nan")

    @property
    def disturbed(self) -> float:
        """The share of the wall time the worker's threads spent waiting for a CPU (0 on a
        quiet machine; NaN where the kernel does not say)."""
        return self.waited / self.wall if self.wall > 0 else float("nan")

    def __add__(self, other: Timing) -> Timing:
        """Two requests of one timed round, summed (prepare + run)."""
        names = ("wall", "cpu", "reported", "foreign", "waited")
        return Timing(*[getattr(self, f) + getattr(other, f) for f in names])

    def value(self, clock: str) -> float:
        return self.cpu if clock == "cpu" and self.cpu == self.cpu else self.wall


@dataclass
class PairLog:
    """The timed rounds of one worker pair: paired (kept, candidate) timings."""

    kept: list[Timing] = field(default_factory=list)
    candidate: list[Timing] = field(default_factory=list)

    def log_ratios(self, clock: str) -> np.ndarray:
        """log(candidate / kept) per round (negative: the candidate is faster)."""
        a = np.array([t.value(clock) for t in self.kept])
        b = np.array([t.value(clock) for t in self.candidate])
        return np.log(b / a)

    def mean_log_ratio(self, clock: str) -> float:
        return float(np.mean(self.log_ratios(clock)))
