"""Workers forked from a template: start-up paid once per commit, not once per worker.

A template (``HARNESS_WORKER_TEMPLATE=1``) is a worker process that composes the config, seals
the read-only code (:mod:`harness.bench.seal`) and imports torch, the harness and the method's
and dataset's modules — and nothing more: no input, no device, no thread pool (a process forked
after CUDA or OpenMP started is broken). It then answers ``{"op": "fork", ...}``: it forks a
child that starts its own session, takes two FIFOs the judge made as its stdin and stdout and
the log as its stderr, and continues as an ordinary lazy worker (:mod:`.serve`) with the
template's seal. The judge keeps the template stopped (SIGSTOP) between forks, so import-time
code of a candidate cannot work in it while the other side is timed.

The forked workers share the template's address-space layout, as workers started with ASLR off
do (``loop.launch.no_aslr``); the pages a child writes become its own. ``loop.launch.fork``
turns this on, for **both sides alike**: a template of the candidate's checkout and one of the
kept commit's, per try, each forking that side's worker of every pair (the keeper's warm
workers are then not used). It is off by default. Measured (``benchmarks/process_bias.py
--variants loop,loop+fork``, RCTD 1000 px, 8 processes x 8 fresh inputs, pinned to one core
of the 2-core VM, the other core busy with another job; run twice, in both orders): forked
workers carry no more per-process bias than fresh ones (sd 2.7% / 2.5% against 4.6% / 2.7%),
but their runs are **slower**: median 0.688 s against 0.569 s, and 0.639 s against 0.571 s
with the order swapped (+12 to +21%, the cause not found: not transparent huge pages, which
are madvise-only here). Forking only the candidate would bias every decision against it;
forked alike, both sides pay it. But every worker a template forks shares that template's
bias, and the rule assumes independent pairs: an A/A collection of 30 forked pairs
(``benchmarks/loop_power.py collect ... loop.launch.fork=true``, RCTD 1000 px, one template
per side) had a mean pair statistic of −2.0% (se 1.2%) and 3.6% A/A false keeps in ``analyse``
(0.0% with fresh workers). So it stays off.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.optimize.workers import Launch, Worker, WorkerFailed

TEMPLATE_ENV = "HARNESS_WORKER_TEMPLATE"


# ---- the template process ---------------------------------------------------------------------
def _send(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _preload(valid: Any) -> None:
    """Import what every worker of this config imports, touching no device."""
    import torch  # noqa: F401

    import harness.bench.runner  # noqa: F401
    import harness.optimize.serve  # noqa: F401

    for target in (valid.method._target_, valid.dataset._target_):
        importlib.import_module(target.rsplit(".", 1)[0])


def _become_worker(req: dict[str, Any], seal: Any, started: int) -> None:
    """In the forked child: own session (then ``started`` is closed: the template replies only
    after, so the judge's SIGSTOP of the template's group cannot catch it), the judge's FIFOs
    as stdio, then a lazy worker."""
    os.setsid()
    os.close(started)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its own children are waited for
    os.environ["HARNESS_WORKER_LAZY"] = "1"
    os.environ.pop(TEMPLATE_ENV, None)
    os.dup2(os.open(req["stdin"], os.O_RDONLY), 0)
    os.dup2(os.open(req["stdout"], os.O_WRONLY), 1)
    os.dup2(os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdio
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from harness.optimize.serve import main

    code = 0
    try:
        main(seal=seal)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def serve_template(overrides: list[str]) -> None:
    """The template's loop (module doc)."""
    from harness.bench.seal import Seal, project_root
    from harness.config.compose import compose_checked

    _, valid = compose_checked(overrides)
    seal = Seal.for_files(project_root(), valid.method.readonly)  # before the method's import
    _preload(valid)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked workers are reaped by the kernel
    from harness.optimize.serve import PROTOCOL

    _send({"event": "template", "protocol": PROTOCOL})
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        if req.get("op") != "fork":
            _send({"event": "error", "kind": "user", "message": f"unknown op {req.get('op')!r}"})
            continue
        ready, started = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready)
            _become_worker(req, seal, started)
        os.close(started)
        os.read(ready, 1)  # EOF once the child has its own session (or died)
        os.close(ready)
        _send({"event": "forked", "pid": pid})


# ---- the judge's side -------------------------------------------------------------------------
class ForkedProcess:
    """The ``subprocess.Popen`` surface :class:`Worker` uses, for a worker forked by a template
    (not this process's child: it is polled by PID, its stdio are FIFOs)."""

    def __init__(self, pid: int, stdin: Any, stdout: Any) -> None:
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                with open(f"/proc/{self.pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                        self.returncode = -1
            except OSError:
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        return self.returncode or -1

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


def _opened(fifo: Path, flags: int, proc: ForkedProcess, timeout_s: float = 60.0) -> int:
    """A descriptor of ``fifo`` once the worker has opened its end (a FIFO's open blocks until
    both ends are open): polled, so a worker that died first cannot hang the judge."""
    import threading

    result: list[int] = []
    opener = threading.Thread(target=lambda: result.append(os.open(fifo, flags)), daemon=True)
    opener.start()
    deadline = time.monotonic() + timeout_s
    while opener.is_alive() and proc.poll() is None and time.monotonic() < deadline:
        opener.join(0.05)
    if not result:  # release the blocked open with the other end, then give up
        other = os.O_RDONLY if flags == os.O_WRONLY else os.O_WRONLY
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, other | os.O_NONBLOCK))
        opener.join(1.0)
        for fd in result:
            os.close(fd)
        raise WorkerFailed("crash", f"forked worker {proc.pid} did not open {fifo.name}")
    return result[0]


class Template:
    """A template process of one checkout, forking :class:`Worker` s on request."""

    def __init__(
        self, checkout: Path, overrides: list[str], log_path: Path, timeout_s: float,
        launch: Launch | None = None, cgroups: bool = False,
    ) -> None:  # fmt: skip
        """``cgroups``: the template and every forked worker each in a cgroup of its own
        (:mod:`.cgroup`; a forked worker is moved into its own as soon as it is forked)."""
        launch = launch or Launch()
        env = ((TEMPLATE_ENV, "1"),)
        self.timeout_s = timeout_s
        self.cgroups = cgroups
        self.process = Worker(
            checkout, overrides, log_path, timeout_s, Launch(launch.prefix, launch.env + env),
            suspend=True, expect="template", cgroup=self._cgroup(),
        )  # fmt: skip
        self.fifos = Path(tempfile.mkdtemp(prefix="harness-fork-"))
        self.forked = 0

    def _cgroup(self) -> Any:
        if not self.cgroups:
            return None
        from harness.optimize.cgroup import Cgroup

        return Cgroup()

    def fork(self, log_path: Path, suspend: bool = False) -> Worker:
        """A fresh lazy worker, forked from the template, ready for requests."""
        self.forked += 1
        fifo_in, fifo_out = (self.fifos / f"{self.forked}.{s}" for s in ("in", "out"))
        os.mkfifo(fifo_in, 0o600)
        os.mkfifo(fifo_out, 0o600)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        reply = self.process.request("fork", stdin=str(fifo_in), stdout=str(fifo_out),
                                     log=str(log_path))  # fmt: skip
        proc = ForkedProcess(int(reply["pid"]), None, None)
        group = self._cgroup()
        if group is not None:  # out of the template's cgroup, before it serves a request
            try:
                group.add(proc.pid)
            except OSError as exc:
                proc.kill()
                group.remove()
                raise WorkerFailed("crash", f"forked worker {proc.pid}: {exc}") from None
        try:  # the child opens its stdin, then its stdout: the same order here
            proc.stdin = open(_opened(fifo_in, os.O_WRONLY, proc), "w")  # noqa: SIM115
            proc.stdout = open(_opened(fifo_out, os.O_RDONLY, proc))  # noqa: SIM115
        finally:
            for fifo in (fifo_in, fifo_out):
                fifo.unlink()
        return Worker.attach(proc, log_path, self.timeout_s, suspend, group)

    def close(self) -> None:
        self.process.close()
        with contextlib.suppress(OSError):
            self.fifos.rmdir()


__all__ = ["ForkedProcess", "Template", "WorkerFailed", "serve_template"]
