"""The loop with workers forked from templates (``loop.launch.fork``): one template per side
and try, both sides forked alike, the workers judged exactly as fresh ones — a real speed-up
kept, a wrong output discarded — and nothing left running."""

from __future__ import annotations

import pytest

from harness.sinks.results_tsv import read_rows
from tests.loop.loop_repo import TOY, LoopRepo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = LoopRepo(tmp_path_factory.mktemp("forkrepo"))
    started = r.loop("start", "tag=f", *TOY, "loop.launch.fork=true")
    assert started.returncode == 0, started.stderr
    yield r
    from harness.optimize.keeper import shutdown

    shutdown(r.root / "results" / "loop" / "f" / "keeper.sock")


@pytest.mark.slow
def test_forked_candidates_are_judged_like_fresh_ones(repo):
    attempts = repo.root / "results" / "attempts" / "f"
    repo.set_knob("SLEEP_S", "0.03", "faster")
    kept = repo.loop("try", "-d", "sleep less")
    assert kept.returncode == 0, kept.stderr
    row = read_rows(repo.root / "results" / "results.tsv")[-1]
    assert (row["status"], row["verdict"]) == ("keep", "exact"), row["description"]
    templates = sorted(p.name.split("-", 2)[2] for p in attempts.glob("*-template.log"))
    candidates = [p for p in attempts.glob("*-candidate-*.log") if "template" not in p.name]
    kept_side = [p for p in attempts.glob("*-kept-*.log") if "template" not in p.name]
    # one template per side (both sides forked alike), a forked worker per side and pair
    assert templates == ["candidate-template.log", "kept-template.log"], templates
    assert len(candidates) >= 2 and len(kept_side) == len(candidates)
    assert not list(attempts.glob("kept-*-slot*.log"))  # the keeper's warm workers not used
    workers = candidates + kept_side
    assert all("prepare done" not in c.read_text() for c in workers)  # lazy: no start input
    head = repo.set_knob("OFFSET", "0.25", "wrong")
    wrong = repo.loop("try", "-d", "wrong output")
    assert wrong.returncode == 0, wrong.stderr
    row = read_rows(repo.root / "results" / "results.tsv")[-1]
    assert (row["status"], row["verdict"]) == ("discard", "wrong") and repo.head() != head
    assert "worker start-up" in wrong.stdout  # every decision says where the time went


IMPORT_DAEMON = """

import subprocess as _subprocess
import sys as _sys

_subprocess.Popen(  # at import, in the template: a process in a session of its own
    [_sys.executable, "-c", "import time; time.sleep(61)"], start_new_session=True
)
"""


@pytest.mark.slow
def test_a_process_left_by_import_time_code_in_the_template_is_refused(repo):
    """The template imports the candidate's code: what that leaves running outside the
    template's process group is in its cgroup, and refused."""
    import subprocess

    from harness.optimize import cgroup

    if cgroup.available():
        pytest.skip(f"no worker cgroups here: {cgroup.available()}")
    fast = repo.root / "methods" / "toy" / "fast.py"
    fast.write_text(fast.read_text() + IMPORT_DAEMON)
    repo.git("add", "methods/toy/fast.py")
    repo.commit("leave a process at import")
    tried = repo.loop("try", "-d", "import-time daemon")
    assert tried.returncode == 0, tried.stderr
    row = read_rows(repo.root / "results" / "results.tsv")[-1]
    assert row["status"] == "rejected", row
    assert "left 1 process running outside its worker" in row["description"], row
    left = subprocess.run(["pgrep", "-f", "time.sleep[(]61[)]"], capture_output=True)
    assert left.stdout == b"", left.stdout  # killed with the template's cgroup
