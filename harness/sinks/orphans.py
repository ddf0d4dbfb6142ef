"""MLflow runs whose process died without ending them (SIGKILL, OOM killer, power loss).

Every run carries the tags ``host``, ``pid``, ``pid_start`` (the process's start time in
clock ticks since boot, from ``/proc``, so a reused PID is not taken for the dead process) and
``boot_id``. Before a benchmark logs, :func:`reap` ends as FAILED every RUNNING run of this
tracking store started on this host, in this boot, by a process that no longer exists — a run
can only be left RUNNING by a process that was killed hard: SIGINT/SIGTERM, a crash and a
timeout all end their run. Runs of another boot are left alone (another machine may share the
host name), so a run orphaned by a reboot stays RUNNING.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

_REAPED: set[str] = set()  # tracking URIs already reaped by this process


def _start_ticks(pid: int) -> str:
    """The process's start time (``/proc/<pid>/stat`` field 22), or "" where unknown."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - tiny proc file
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _boot_id() -> str:
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()  # noqa: SIM115
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """The tags that identify this process: ``host``, ``pid``, ``pid_start``, ``boot_id``."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "pid_start": _start_ticks(pid),
            "boot_id": _boot_id()}  # fmt: skip


def alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start`` ticks, when known) still runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _start_ticks(pid)
    return not (start and now and now != start)


def reap(client: Any, uri: str) -> list[str]:
    """End as FAILED this host's RUNNING runs whose process is gone; returns their ids.

    Once per tracking URI and process; best effort (a store that cannot be searched is left
    alone)."""
    if uri in _REAPED:
        return []
    _REAPED.add(uri)
    host = socket.gethostname().replace("'", "")
    try:
        from mlflow.entities import ViewType

        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        runs = []
        for i in range(0, len(ids), 100):
            runs += client.search_runs(
                ids[i : i + 100],
                filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'",
                max_results=1000,
            )
    except Exception:
        return []
    reaped, boot = [], _boot_id()
    for run in runs:
        tags = run.data.tags
        pid = tags.get("pid", "")
        if not pid.isdigit() or int(pid) == os.getpid() or tags.get("boot_id", "") != boot:
            continue  # not a run of this machine's processes since boot
        if alive(int(pid), tags.get("pid_start", "")):
            continue
        note = f"process {pid} on {host} ended without closing this run (killed hard)"
        try:
            client.set_tag(run.info.run_id, "error", note)
            client.set_tag(run.info.run_id, "status", "killed")
            client.set_terminated(
                run.info.run_id, status="FAILED", end_time=int(time.time() * 1000)
            )
        except Exception:
            continue
        reaped.append(run.info.run_id)
    return reaped
