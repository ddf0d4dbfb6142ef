"""A freezer cgroup per loop worker: every process a worker ever starts stays accountable.

A worker's process group is not enough to hold what it starts: a child in a new session (or a
double-forked daemon, reparented to init) leaves the group, so stopping the group between
requests leaves it running — free to slow the other side while that side is timed. A cgroup
holds every descendant whatever its session, and a worker cannot leave it (the cgroup
filesystem is read-only inside the sandbox, :mod:`.sandbox`). Where this machine allows it
(root and a writable freezer: cgroup v1's ``freezer`` hierarchy, or cgroup v2's
``cgroup.freeze``), each worker joins a cgroup of its own before it execs Python
(:meth:`Cgroup.prefix`); the judge freezes it while the other side is timed, lists what is in it
(:meth:`Cgroup.pids`), and at close kills everything in it and removes it. Elsewhere
:func:`available` says why in one line and the judge keeps its older defences only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import time
from pathlib import Path

PARENT = "harness-loop"  # every worker cgroup lives under <mount>/harness-loop/<judge pid>-<n>
_counter = itertools.count(1)


def mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup mount of this process."""
    found = []
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    found.append((parts[1], parts[2], set(parts[3].split(","))))
    except OSError:
        pass
    return found


def mount_points() -> list[Path]:
    """Every cgroup mount point (what the sandbox makes read-only)."""
    return [Path(m) for m, _, _ in mounts()]


def _v2_root() -> Path | None:
    for point, kind, _ in mounts():
        if kind == "cgroup2" and (Path(point) / "cgroup.procs").exists():
            # a child of the root cgroup can be frozen (cgroup.freeze exists in non-root ones)
            return Path(point)
    return None


def hierarchy() -> tuple[str, Path] | None:
    """('v1', freezer mount) or ('v2', cgroup2 mount) where workers can be frozen, else None."""
    for point, kind, opts in mounts():
        if kind == "cgroup" and "freezer" in opts:
            return "v1", Path(point)
    root = _v2_root()
    return ("v2", root) if root is not None else None


def available() -> str:
    """'' when every worker can get a freezer cgroup here, else why not (one line)."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root (creating cgroups needs it)"
    found = hierarchy()
    if found is None:
        return "no cgroup v1 freezer or cgroup v2 mount"
    version, root = found
    if not os.access(root, os.W_OK):
        return f"cgroup {version} mount {root} is not writable"
    try:
        (root / PARENT).mkdir(exist_ok=True)
    except OSError as exc:
        return f"cannot create cgroups under {root} ({exc.strerror})"
    if version == "v2":
        probe = root / PARENT / "cgroup.freeze"
        if not probe.exists():
            return f"cgroup v2 at {root} has no cgroup.freeze (kernel < 5.2)"
    return ""


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


class Cgroup:
    """One worker's cgroup (created here, under :data:`PARENT`)."""

    def __init__(self, name: str | None = None) -> None:
        found = hierarchy()
        assert found is not None, "cgroup.available() first"
        self.version, root = found
        name = name or f"{os.getpid()}-{next(_counter)}"
        self.path = root / PARENT / name
        self.path.mkdir(parents=True, exist_ok=True)
        self.frozen = False

    def prefix(self) -> tuple[str, ...]:
        """A command prefix: the process joins this cgroup, then execs the rest."""
        procs = str(self.path / "cgroup.procs")
        return ("sh", "-c", 'echo $$ > "$0" && exec "$@"', procs)

    def add(self, pid: int) -> None:
        """Move ``pid`` (not its existing children) into this cgroup."""
        _write(self.path / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """The processes in the cgroup now (frozen ones included)."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return sorted({int(p) for p in text.split()})

    def _set_frozen(self, frozen: bool, timeout_s: float = 5.0) -> None:
        if self.version == "v1":
            _write(self.path / "freezer.state", "FROZEN" if frozen else "THAWED")
            want = "FROZEN" if frozen else "THAWED"
            done = lambda: (self.path / "freezer.state").read_text().strip() == want  # noqa: E731
        else:
            _write(self.path / "cgroup.freeze", "1" if frozen else "0")
            want = f"frozen {int(frozen)}"
            done = lambda: want in (self.path / "cgroup.events").read_text()  # noqa: E731
        deadline = time.monotonic() + timeout_s
        while not done():  # v1: FREEZING until every task stopped; writing again retries
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
            if self.version == "v1" and frozen:
                _write(self.path / "freezer.state", "FROZEN")
        self.frozen = frozen

    def freeze(self) -> None:
        """Stop every process in the cgroup (returns once they are stopped)."""
        with contextlib.suppress(OSError):
            self._set_frozen(True)

    def thaw(self) -> None:
        with contextlib.suppress(OSError):
            self._set_frozen(False)

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL everything in the cgroup (frozen first, so nothing forks meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            if self.version == "v2" and (self.path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(self.path / "cgroup.kill", "1")
            else:
                self.freeze()
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                self.thaw()  # a frozen task dies only once thawed
            time.sleep(0.01)

    def remove(self, timeout_s: float = 5.0) -> None:
        """Kill what is left and remove the cgroup directory."""
        if not self.path.exists():
            return
        self.kill()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.path.rmdir()  # fails while a (dying) task is still in it
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(everything: bool = False) -> int:
    """Kill and remove worker cgroups left by judges that are gone (all of them with
    ``everything``); returns how many were removed."""
    found = hierarchy()
    if found is None or available():
        return 0
    removed = 0
    for path in sorted((found[1] / PARENT).iterdir()):
        if not path.is_dir():
            continue
        owner = path.name.split("-", 1)[0]
        if not everything and owner.isdigit() and _alive(int(owner)):
            continue
        cg = Cgroup.__new__(Cgroup)
        cg.version, cg.path, cg.frozen = found[0], path, False
        cg.remove()
        removed += not path.exists()
    return removed


def process_line(pid: int, limit: int = 60) -> str:
    """The command line of ``pid``, short (for a reason shown to the agent)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if args:
        args[0] = os.path.basename(args[0])  # python, not the interpreter's whole path
    text = " ".join(args)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
