"""Peak RSS of a command, measured from a small launcher process.

A child's ``ru_maxrss`` includes the RSS its parent had when it forked (Linux carries the old
memory map's high-water mark across ``exec``), so a benchmark process that has grown (it
generated a peer's data, say) must not start the measured command itself: a fresh, small
Python process starts it and reports the child's ``wait4`` rusage.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER = r"""
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd`` (output to ``log``); (exit status, wall s, peak RSS MB of that process)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rusage") as out, log.open("w") as fh:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, out.name, *cmd], cwd=cwd, env=env,
                       stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
        wall = time.perf_counter() - t0
        rc, maxrss_kb = (int(x) for x in Path(out.name).read_text().split())
    return rc, wall, maxrss_kb / 1024
