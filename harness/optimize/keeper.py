"""Warm workers for the loop's kept commit, alive across tries (``loop.warm_kept``).

``python -m harness.optimize.keeper <socket> <json spec>`` runs detached: it owns up to
``max_pairs`` workers of the kept commit (started lazily, one per pair slot) and serves the
judge over a Unix socket, one JSON request per line: ``{"slot": i, "op": ..., ...}``, replied
with the worker's reply — ``timed`` requests are timed here, from outside the worker, like
:meth:`harness.optimize.workers.Worker.timed`. ``{"op": "hello", "spec": ...}`` checks that the
keeper serves the judge's kept commit and settings (otherwise it restarts its workers for the
new ones). It exits after ``idle_s`` without requests, or on ``{"op": "shutdown"}``
(``python -m harness.loop stop``); ``{"op": "workers"}`` lists its workers with their memory.

Its pool is bounded by memory as well as by ``max_pairs``: before it starts a worker, it closes
the least recently used ones until the pool's measured resident memory (worker and descendants,
``VmRSS``) plus one more worker of the largest size seen fits ``spec["memory_mb"]`` (0: half the
memory available when the keeper started), and likewise the device memory the driver accounts
to them (``nvidia-smi``; half the first device's memory). A slot whose worker was closed gets a
fresh one when next used.

A try therefore pays worker start-up only for its candidates; the pairs still alternate which
side started first in the session (the kept worker of slot i is reused, its candidate is new).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.optimize.memory import (
    available_bytes,
    device_memory_bytes,
    device_total_bytes,
    rss_bytes,
)
from harness.optimize.workers import Launch, Timing, Worker, WorkerFailed


class Keeper:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.workers: dict[int, Worker] = {}
        self.used: dict[int, float] = {}  # slot -> monotonic time of its last request
        self.host_budget = int(float(spec.get("memory_mb", 0)) * 2**20) or available_bytes() // 2
        self.device_budget = device_total_bytes() // 2
        self.evicted = 0

    def reset(self, spec: dict[str, Any]) -> None:
        self.close()
        self.spec = spec

    def memory(self) -> dict[int, tuple[int, int]]:
        """(resident, device) bytes of each live worker, by slot."""
        device = device_memory_bytes()
        return {
            slot: (rss_bytes(w.proc.pid), device.get(w.proc.pid, 0))
            for slot, w in self.workers.items()
            if w.proc.poll() is None
        }

    def _make_room(self, slot: int) -> None:
        """Close least recently used workers until one more fits both budgets."""
        while True:
            mem = {s: m for s, m in self.memory().items() if s != slot}
            if not mem:
                return
            host, dev = (sum(m[i] for m in mem.values()) for i in (0, 1))
            need_host, need_dev = (max(m[i] for m in mem.values()) for i in (0, 1))
            fits_host = host + need_host <= self.host_budget
            fits_dev = not dev or not self.device_budget or dev + need_dev <= self.device_budget
            if fits_host and fits_dev:
                return
            victim = min(mem, key=lambda s: self.used.get(s, 0.0))
            print(
                f"keeper: closing slot {victim + 1}'s worker ({mem[victim][0] / 2**20:.0f} MB) "
                f"to stay within {self.host_budget / 2**20:.0f} MB",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            self.workers.pop(victim).close()
            self.evicted += 1

    def worker(self, slot: int) -> Worker:
        self.used[slot] = time.monotonic()
        w = self.workers.get(slot)
        if w is None or w.proc.poll() is not None:
            if w is not None:
                w.close()  # what it left, its cgroup
            self._make_room(slot)
            s = self.spec
            launch = Launch(tuple(s["prefix"]), tuple(tuple(e) for e in s["env"]))
            log = Path(s["logs"]) / f"kept-{s['kept'][:8]}-slot{slot + 1}.log"
            from harness.optimize import cgroup

            group = None if cgroup.available() else cgroup.Cgroup()  # frozen between requests
            w = Worker(
                Path(s["tree"]), list(s["overrides"]), log, float(s["timeout_s"]), launch,
                lazy=bool(s.get("lazy", False)), cgroup=group,
            )  # fmt: skip
            self.workers[slot] = w
        return w

    def listing(self) -> dict[str, Any]:
        """The ``workers`` reply: each live worker with its memory, and the budgets."""
        now = time.monotonic()
        return {
            "event": "workers",
            "pid": os.getpid(),
            "kept": self.spec.get("kept", ""),
            "host_budget": self.host_budget,
            "device_budget": self.device_budget,
            "evicted": self.evicted,
            "workers": [
                {
                    "slot": s + 1,
                    "pid": self.workers[s].proc.pid,
                    "rss": r,
                    "device": d,
                    "idle_s": now - self.used.get(s, now),
                }  # fmt: skip
                for s, (r, d) in sorted(self.memory().items())
            ],
        }

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "hello":
            if req["spec"] != self.spec:
                self.reset(req["spec"])
            return {"event": "hello", "pid": os.getpid()}
        if op == "workers":
            return self.listing()
        slot = int(req["slot"])
        if op == "start":
            started = slot not in self.workers
            t0 = time.monotonic()
            w = self.worker(slot)
            return {
                "event": "started",
                "fresh": started,
                "startup_s": time.monotonic() - t0,
                "protocol": w.protocol,
                "ready": w.ready,
            }
        w = self.worker(slot)
        if op == "timed":
            t = w.timed(req.get("as", "time"), **dict(req.get("args", {})))
            return {
                "event": "timed",
                "wall": t.wall,
                "cpu": t.cpu,
                "reported": t.reported,
                "foreign": t.foreign,
                "waited": t.waited,
            }
        args = {k: v for k, v in req.items() if k not in ("op", "slot")}
        return w.request(op, **args)

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.workers.clear()


def serve(path: str, spec: dict[str, Any], idle_s: float = 1800.0) -> None:
    keeper = Keeper(spec)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(idle_s)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return
            with conn, conn.makefile("rw") as stream:
                for line in stream:
                    req = json.loads(line)
                    if req.get("op") == "shutdown":
                        return
                    try:
                        reply = keeper.handle(req)
                    except WorkerFailed as exc:
                        keeper.workers.pop(int(req.get("slot", -1)), None)
                        reply = {"event": "error", "kind": exc.status, "message": str(exc)}
                    stream.write(json.dumps(reply) + "\n")
                    stream.flush()
    finally:
        keeper.close()
        server.close()
        if os.path.exists(path):
            os.unlink(path)


class RemoteWorker:
    """The judge's handle on a warm kept worker (the :class:`Worker` interface)."""

    def __init__(self, client: KeeperClient, slot: int) -> None:
        self.client, self.slot = client, slot
        reply = client.call({"op": "start", "slot": slot})
        self.protocol = int(reply["protocol"])
        self.ready = reply["ready"]
        self.startup_s = float(reply["startup_s"])

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        return self.client.call({"op": op, "slot": self.slot, **args})

    def timed(self, op: str = "time", **args: Any) -> Timing:
        r = self.client.call({"op": "timed", "slot": self.slot, "as": op, "args": args})
        return Timing(
            wall=r["wall"],
            cpu=r["cpu"],
            reported=r.get("reported", float("nan")),
            foreign=r.get("foreign", float("nan")),
            waited=r.get("waited", float("nan")),
        )

    def close(self) -> None:  # the worker stays warm in the keeper
        pass


class KeeperClient:
    """A connection to the loop's keeper, started (detached) when none answers."""

    def __init__(self, path: Path, spec: dict[str, Any]) -> None:
        self.path = path
        self.sock = self._connect(spec)
        self.stream = self.sock.makefile("rw")
        self.call({"op": "hello", "spec": spec})

    def _connect(self, spec: dict[str, Any]) -> socket.socket:
        for attempt in range(2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                return sock
            except OSError:
                sock.close()
                if attempt:
                    raise
            self.path.parent.mkdir(parents=True, exist_ok=True)
            from harness.bench.seal import project_root
            from harness.optimize.isolation import isolated_command

            # the judge's own code, isolated: it times the kept side
            cmd = isolated_command(
                project_root(), "harness.optimize.keeper", [str(self.path), json.dumps(spec)]
            )
            log = open(self.path.with_suffix(".log"), "a")  # noqa: SIM115 - the daemon's stderr
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True, env=os.environ.copy())  # fmt: skip
            deadline = time.monotonic() + 30
            while not self.path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        raise RuntimeError("unreachable")

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        self.stream.write(json.dumps(req) + "\n")
        self.stream.flush()
        line = self.stream.readline()
        if not line:
            raise WorkerFailed("crash", "the kept-worker keeper went away")
        reply = json.loads(line)
        if reply.get("event") == "error":
            raise WorkerFailed(
                reply.get("kind", "crash"), reply.get("message", "kept worker failed")
            )
        return reply

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def query(path: Path) -> dict[str, Any] | None:
    """The keeper's ``workers`` listing, or None when no keeper answers (none is started)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    try:
        sock.connect(str(path))
        with sock.makefile("rw") as stream:
            stream.write('{"op": "workers"}\n')
            stream.flush()
            line = stream.readline()
        return json.loads(line) if line else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def shutdown(path: Path, wait_s: float = 30.0) -> bool:
    """Stop the loop's keeper and its workers if one is running; True if one was. Waits up to
    ``wait_s`` for it to go (it removes its socket last), then kills it."""
    listing = query(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        sock.sendall(b'{"op": "shutdown"}\n')
    except OSError:
        return False
    finally:
        sock.close()
    deadline = time.monotonic() + wait_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if path.exists() and listing:  # stuck: end it and its workers' process groups
        import signal

        for pid in [listing["pid"], *(w["pid"] for w in listing["workers"])]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL) if pid != listing["pid"] else os.kill(pid, 9)
        path.unlink(missing_ok=True)
    return True


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
