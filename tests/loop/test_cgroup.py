"""The worker cgroups (:mod:`harness.optimize.cgroup`): a process that left the worker's session
stays in its cgroup, is frozen with it, killed with it, and cannot move itself out."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.optimize import cgroup, sandbox

pytestmark = pytest.mark.skipif(bool(cgroup.available()), reason=f"{cgroup.available()}")

# a worker that leaves a spinner in a new session and a double-forked daemon, then waits
LEAVER = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            pass
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_freeze_thaw_kill_remove():
    group = cgroup.Cgroup()
    proc = subprocess.Popen(
        [*group.prefix(), sys.executable, "-c", LEAVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        pids = group.pids()
        assert proc.pid in pids and len(pids) == 3, pids  # the worker, spinner and daemon
        others = [p for p in pids if p != proc.pid]
        assert all(cgroup.pgid(p) != proc.pid for p in others)  # outside its group

        group.freeze()
        before = [_cpu_ticks(p) for p in others]
        time.sleep(0.5)
        assert [_cpu_ticks(p) for p in others] == before  # frozen: no CPU at all
        group.thaw()
        time.sleep(0.5)
        assert all(_cpu_ticks(p) > b for p, b in zip(others, before, strict=True))
    finally:
        group.remove()
        proc.wait(timeout=10)
    assert not group.path.exists()
    assert proc.returncode is not None
    for pid in others:  # gone, or a zombie its new parent has not reaped yet
        assert _state(pid) in ("", "Z"), pid


@pytest.mark.skipif(bool(sandbox.available()), reason=f"no OS sandbox: {sandbox.available()}")
def test_a_sandboxed_worker_cannot_leave_its_cgroup():
    """Inside the sandbox every cgroup mount is read-only: writing its pid to the parent's
    cgroup.procs (or creating a cgroup of its own) fails, and it is still in its cgroup."""
    group = cgroup.Cgroup()
    parent = group.path.parent.parent / "cgroup.procs"  # the hierarchy's root cgroup
    escape = f"echo $$ > {parent} && echo escaped; mkdir {group.path}/inner; cat /proc/self/cgroup"
    prefix = sandbox.prefix(cgroup.mount_points(), writable=[])
    try:
        proc = subprocess.run(
            [*group.prefix(), *prefix, "sh", "-c", escape], capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip
    finally:
        group.remove()
    assert "escaped" not in proc.stdout, proc.stdout
    assert "Read-only file system" in proc.stderr, proc.stderr
    assert f"/{cgroup.PARENT}/{group.path.name}" in proc.stdout, proc.stdout  # still in it
    assert not group.path.exists()


def test_sweep_removes_cgroups_of_judges_that_are_gone():
    dead = subprocess.Popen(["true"])
    dead.wait()
    group = cgroup.Cgroup(f"{dead.pid}-1")
    sleeper = subprocess.Popen([*group.prefix(), "sleep", "60"])
    time.sleep(0.2)
    assert sleeper.pid in group.pids()
    assert cgroup.sweep() >= 1
    assert not group.path.exists()
    assert sleeper.wait(timeout=10) != 0
