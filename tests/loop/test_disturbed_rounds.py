"""Rounds a busy neighbour disturbed are run again, within a budget, and said."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness.optimize.pairs import Session
from harness.optimize.workers import Timing, tree_cpu_ns


def _t(wall: float, waited: float) -> Timing:
    return Timing(wall=wall, cpu=wall - waited, waited=waited)


def test_a_round_where_a_side_waited_for_the_cpu_is_run_again():
    s = Session()
    assert not s.disturbed((_t(1.0, 0.02), _t(1.0, 0.05)), 0.1, 2)
    assert s.disturbed((_t(1.0, 0.02), _t(1.0, 0.3)), 0.1, 2)
    assert s.disturbed((_t(1.0, 0.5), _t(1.0, 0.0)), 0.1, 2)
    assert not s.disturbed((_t(1.0, 0.5), _t(1.0, 0.0)), 0.1, 2)  # budget spent: counted
    assert s.reruns == 2 and "2 disturbed round(s) run again" in s.breakdown()
    s.reruns_this_pair = 0  # a new pair
    assert not s.disturbed((_t(1.0, 0.5), _t(1.0, 0.0)), 1.0, 2)  # 1 turns it off
    assert not s.disturbed((_t(1.0, float("nan")), _t(1.0, 0.0)), 0.1, 2)  # no schedstat


def test_the_decision_line_says_start_up_and_warm_up_apart():
    s = Session(started=time.monotonic() - 100.0, startup_s=10.0, warmup_s=20.0, runs_s=60.0)
    line = s.breakdown()
    assert "worker start-up 10 s (10%), warm-up rounds 20 s (20%)" in line, line
    assert "timed runs 60 s, other 10 s" in line, line


def test_the_kernel_reports_the_wait_of_a_process_that_shares_its_cpu():
    """Two busy processes pinned to one CPU: each waits about half of the time."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n"
    cmd = ["taskset", "-c", "0", sys.executable, "-c", spin]
    procs = [subprocess.Popen(cmd) for _ in range(2)]
    time.sleep(0.2)
    before = tree_cpu_ns(procs[0].pid)
    t0 = time.perf_counter()
    time.sleep(0.8)
    after = tree_cpu_ns(procs[0].pid)
    wall = time.perf_counter() - t0
    for p in procs:
        p.wait()
    assert before is not None and after is not None
    waited = (after[2] - before[2]) / 1e9
    assert 0.25 < waited / wall <= 1.0, waited / wall  # half on a quiet machine
    assert os.path.exists("/proc/self/schedstat")
