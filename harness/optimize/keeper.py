"""Warm workers for the loop's kept commit, alive across tries (``loop.warm_kept``).

``python -m harness.optimize.keeper <socket> <json spec>`` runs detached: it owns up to
``max_pairs`` workers of the kept commit (started lazily, one per pair slot) and serves the
judge over a Unix socket, one JSON request per line: ``{"slot": i, "op": ..., ...}``, replied
with the worker's reply — ``timed`` requests are timed here, from outside the worker, like
:meth:`harness.optimize.workers.Worker.timed`. ``{"op": "hello", "spec": ...}`` checks that the
keeper serves the judge's kept commit and settings (otherwise it restarts its workers for the
new ones). It exits after ``idle_s`` without requests, or on ``{"op": "shutdown"}``.

A try therefore pays worker start-up only for its candidates; the pairs still alternate which
side started first in the session (the kept worker of slot i is reused, its candidate is new).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.optimize.workers import Launch, Timing, Worker, WorkerFailed


class Keeper:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.workers: dict[int, Worker] = {}

    def reset(self, spec: dict[str, Any]) -> None:
        self.close()
        self.spec = spec

    def worker(self, slot: int) -> Worker:
        w = self.workers.get(slot)
        if w is None or w.proc.poll() is not None:
            s = self.spec
            launch = Launch(tuple(s["prefix"]), tuple(tuple(e) for e in s["env"]))
            log = Path(s["logs"]) / f"kept-{s['kept'][:8]}-slot{slot + 1}.log"
            w = Worker(Path(s["tree"]), list(s["overrides"]), log, float(s["timeout_s"]), launch)
            self.workers[slot] = w
        return w

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "hello":
            if req["spec"] != self.spec:
                self.reset(req["spec"])
            return {"event": "hello", "pid": os.getpid()}
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


def shutdown(path: Path) -> None:
    """Stop the loop's keeper if one is running."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        sock.sendall(b'{"op": "shutdown"}\n')
    except OSError:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
