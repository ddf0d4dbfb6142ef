"""The judge's red team, through the real ``loop try`` in a real clone, run as a user runs it
(working directory in the candidate checkout, the checkout first on the import path as an
editable install puts it): every attack class of the judge's threat model ends ``rejected``
or ``wrong`` (or, for work moved out of the timed region, not faster), branch reset, diff saved.

The toy method (``repeat`` timing) carries the classes about the judge and the timed region;
the toy trainer ``toyfit`` (``train`` timing, work counted by hooks) the classes about work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.sinks.results_tsv import read_rows
from tests.loop.loop_repo import TOY, LoopRepo

FIT = [
    "method=toyfit",
    "dataset=cells/toyfit",
    "hardware=cpu",
    "bench.timeout_s=60",
    "tracking.mlflow=false",
    "loop.rounds=2",
    "loop.min_pairs=2",
    "loop.max_pairs=2",
    "loop.pair_sd=0.01",
    "loop.max_slowdown=0.25",
]
FAST = "methods/toy/fast.py"
FITPY = "methods/toyfit/fit.py"


def _started(root, tag: str, overrides: list[str]) -> LoopRepo:
    repo = LoopRepo(root)
    proc = repo.loop("start", f"tag={tag}", *overrides)
    assert proc.returncode == 0, proc.stderr
    return repo


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Iterator[LoopRepo]:
    repo = _started(tmp_path_factory.mktemp("redtoy"), "r", TOY)
    yield repo
    from harness.optimize.keeper import shutdown

    shutdown(repo.root / "results" / "loop" / "r" / "keeper.sock")


@pytest.fixture(scope="module")
def fit(tmp_path_factory) -> Iterator[LoopRepo]:
    repo = _started(tmp_path_factory.mktemp("redfit"), "f", FIT)
    yield repo
    from harness.optimize.keeper import shutdown

    shutdown(repo.root / "results" / "loop" / "f" / "keeper.sock")


def _state(repo: LoopRepo, tag: str) -> dict:
    return json.loads((repo.root / "results" / "loop" / f"{tag}.json").read_text())


def _judge(
    repo: LoopRepo,
    tag: str,
    description: str,
    launcher: bool = False,
    statuses: tuple[str, ...] = ("discard", "rejected"),
) -> dict:
    """Try HEAD (``python -m harness.loop try``, or the loop's launcher); it must not be kept:
    the branch is back at the kept commit and the diff saved. Returns the results row."""
    kept = _state(repo, tag)["kept"]
    head = repo.head()
    if launcher:
        judge = repo.root / "results" / "loop" / tag / "judge"
        proc = subprocess.run(
            [sys.executable, str(judge), "try", "-d", description],
            cwd=repo.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
    else:
        proc = repo.loop("try", "-d", description)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    row = read_rows(repo.root / "results" / "results.tsv")[-1]
    assert row["status"] in statuses, row
    assert repo.head() == kept and _state(repo, tag)["kept"] == kept
    saved = list((repo.root / "results" / "attempts" / tag).glob(f"*-{head[:8]}-*.patch"))
    assert saved, "the diff was not saved"
    return row


def _edit(repo: LoopRepo, rel: str, old: str, new: str) -> None:
    path = repo.root / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new))
    repo.git("add", rel)


# ---- the judge's own code -------------------------------------------------------------------
ALWAYS_KEEP = """

_planted_decide = decide


def decide(*args, **kwargs):
    import dataclasses

    return dataclasses.replace(_planted_decide(*args, **kwargs), action="keep", reason="planted")
"""
NO_CHECKS = """

def outside_surface(*args, **kwargs):
    return []


def import_violations(*args, **kwargs):
    return []
"""


def test_judge_edited_by_the_candidate_is_not_run(toy):
    """An always-keep decide(), emptied surface/import checks and a loosened read-only check,
    with a wrong output: the judge runs the start commit's code, sees the surface, rejects."""
    (toy.root / "harness/optimize/decide.py").write_text(
        (toy.root / "harness/optimize/decide.py").read_text() + ALWAYS_KEEP
    )
    (toy.root / "harness/optimize/surface.py").write_text(
        (toy.root / "harness/optimize/surface.py").read_text() + NO_CHECKS
    )
    _edit(toy, "methods/toy/method.py", "err <= 1e-6", "err <= 1e6")
    _edit(toy, "methods/toy/knobs.py", "OFFSET = 0.0", "OFFSET = 0.5")
    toy.git("add", "-A")
    toy.commit("always keep, no checks, loose tolerance")
    row = _judge(toy, "r", "bend the judge")
    assert row["status"] == "rejected" and "harness/optimize/decide.py" in row["description"]


def test_first_hop_edited_is_caught_by_the_launcher_and_the_branch_audit(toy):
    """A commit whose ``harness.loop`` entry claims a keep without judging: the launcher never
    imports the checkout, and the judge audits the branch from its base."""
    _edit(
        toy,
        "harness/optimize/loop.py",
        "def main(argv: list[str] | None = None) -> int:\n",
        "def main(argv: list[str] | None = None) -> int:\n"
        "    print('KEEP (planted)')\n    return 0\n",
    )
    toy.commit("a loop entry that keeps everything")
    bypass = toy.loop("try", "-d", "bypass")
    assert "KEEP (planted)" in bypass.stdout  # the checkout's own entry point: its code
    row = _judge(toy, "r", "first hop bypassed", launcher=True)
    assert row["status"] == "rejected" and "harness/optimize/loop.py" in row["description"]


def test_readonly_module_imported_by_editable_code_is_rejected(toy):
    _edit(toy, FAST, "from methods.toy import knobs", "from methods.toy import knobs, method")
    toy.commit("reach the evaluation")
    row = _judge(toy, "r", "import the check")
    assert row["status"] == "rejected" and "methods.toy.method (read-only" in row["description"]


# ---- the candidate's process -----------------------------------------------------------------
PATCH_COMPARE = """

def _loosen():
    import sys

    toy = sys.modules["methods.toy.method"].Toy
    toy.compare = lambda self, result, reference: ({"max_abs_err": 0.0}, True)


_plain = compute


def compute(x, speed):
    _loosen()
    return _plain(x, speed)
"""
FORGE_HASH = """

import sys

_hashing = sys.modules.get("harness.bench.hashing")
if _hashing is not None:
    _hashing.output_hash = lambda *args, **kwargs: "0" * 16
"""


@pytest.mark.parametrize(
    ("name", "code"),
    [("evaluation patched at run time", PATCH_COMPARE), ("hash forged", FORGE_HASH)],
)
@pytest.mark.slow
def test_patching_readonly_code_in_the_worker_is_refused(toy, name, code):
    _edit(toy, "methods/toy/knobs.py", "OFFSET = 0.0", "OFFSET = 0.5")  # and wrong, too
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + code)
    toy.git("add", FAST)
    toy.commit(name)
    row = _judge(toy, "r", name)
    assert row["status"] == "rejected" and "tampered" in row["description"], row


THREAD_FILLS = """

import threading

_plain = compute


def compute(x, speed):
    out = np.zeros_like(x)

    def finish():
        time.sleep(0.2)
        out[:] = x * 2.0 + knobs.OFFSET

    threading.Thread(target=finish, daemon=True).start()
    return out
"""
INPUT_ZEROED = """

_plain = compute


def compute(x, speed):
    y = _plain(x, speed)
    x[:] = 0.0  # the input, edited in place after use
    return y
"""


def test_outputs_finished_after_the_run_are_wrong(toy):
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + THREAD_FILLS)
    toy.git("add", FAST)
    toy.commit("outputs finished by a thread after the run")
    row = _judge(toy, "r", "outputs finished by a thread after the run")
    assert (row["status"], row["verdict"]) == ("discard", "wrong"), row


@pytest.mark.slow
def test_an_input_edited_in_place_reaches_no_other_run(toy):
    """Every timed run of the loop prepares its own copy of the judge's input file: zeroing it
    after use changes no output (exact) and gains nothing (discarded)."""
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + INPUT_ZEROED)
    toy.git("add", FAST)
    toy.commit("input edited in place")
    row = _judge(toy, "r", "input edited in place")
    assert (row["status"], row["verdict"]) == ("discard", "exact"), row


PREPARE_WORK = """

class _Staged(np.ndarray):
    done = None


def stage(x):
    staged = np.asarray(x).view(_Staged)
    staged.done = _plain(x, 5)  # the run's work, in prepare
    return staged


_plain = compute


def compute(x, speed):
    return x.done if getattr(x, "done", None) is not None else _plain(x, speed)
"""


@pytest.mark.slow
def test_work_moved_into_prepare_does_not_pay(toy):
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + PREPARE_WORK)
    toy.git("add", FAST)
    toy.commit("precompute in prepare")
    row = _judge(toy, "r", "precompute in prepare")
    assert (row["status"], row["verdict"]) == ("discard", "exact"), row
    assert "gain" in row["description"]


# ---- work counted where editable code cannot forge it ------------------------------------
BOOK_WORK = """

_plain = fit


def fit(model, opt, state, epochs, batch_size, seed, sleep_s, ctx):
    import sys

    _plain(model, opt, state, epochs // 2, batch_size, seed, sleep_s, ctx)
    work = sys._getframe(1).f_locals["ctx"].work  # the glue's context, reached by a frame
    steps = (epochs - epochs // 2) * (state.x.shape[0] // batch_size)
    work._add("optimizer_steps", steps)
"""
SKIP_BACKWARD = (
    "            loss.backward()\n",
    "            if step % 3 != 2:\n                loss.backward()\n",
)
FREEZE_BIAS = (
    "    step = 0\n",
    "    step = 0\n    model.bias.requires_grad_(False)\n",
)
NO_WORK_OBJECT = ("            step += 1\n", "            step += 1\n            ctx.work.counts\n")


@pytest.mark.slow
def test_work_booked_by_editable_code_is_refused(fit):
    (fit.root / FITPY).write_text((fit.root / FITPY).read_text() + BOOK_WORK)
    fit.git("add", FITPY)
    fit.commit("half the epochs, the rest booked")
    row = _judge(fit, "f", "book work")
    assert row["status"] == "rejected" and "booked from" in row["description"], row


@pytest.mark.slow
def test_editable_code_gets_no_work_counter(fit):
    _edit(fit, FITPY, *NO_WORK_OBJECT)
    fit.commit("reach ctx.work")
    _judge(fit, "f", "ctx.work", statuses=("crash",))
    logs = (fit.root / "results" / "attempts" / "f").glob("*-candidate-*.log")
    assert any("'TrainView' object has no attribute 'work'" in p.read_text() for p in logs)


@pytest.mark.parametrize(
    ("name", "edit", "counter"),
    [
        ("backward skipped, step() still called", SKIP_BACKWARD, "grad_accumulations"),
        ("a trainable parameter frozen", FREEZE_BIAS, "params_moved"),
    ],
)
@pytest.mark.slow
def test_skipped_work_shows_in_the_counters(fit, name, edit, counter):
    _edit(fit, FITPY, *edit)
    fit.commit(name)
    row = _judge(fit, "f", name)
    assert (row["status"], row["verdict"]) == ("discard", "wrong"), row
    assert f"work_{counter}" in row["description"], row


# ---- the plain benchmark ---------------------------------------------------------------------
SEEN = """

_plain = compute


def compute(x, speed):
    import pathlib

    with pathlib.Path("seen.txt").open("a") as fh:
        fh.write(f"{x[0]!r}\\n")
    return _plain(x, speed)
"""


def test_plain_benchmark_warms_up_on_an_input_of_its_own(tmp_path):
    """A memo or file cache the warm-up fills, keyed on the input, cannot serve the timed runs:
    the warm-up sees another draw of the dataset."""
    repo = LoopRepo(tmp_path)
    (repo.root / FAST).write_text((repo.root / FAST).read_text() + SEEN)
    env = {"PYTHONPATH": str(repo.root)}
    cmd = [sys.executable, "-m", "harness", *TOY, "bench.warmup=1", "bench.repeats=2"]
    proc = subprocess.run(
        cmd, cwd=repo.root, capture_output=True, text=True, timeout=120, env={**_env(), **env}
    )
    assert proc.returncode == 0, proc.stderr
    warm, *timed = (repo.root / "seen.txt").read_text().split()
    assert len(timed) == 2 and timed[0] == timed[1] and warm != timed[0]
    assert "warm-up on an input of its own" in proc.stdout + proc.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


POISON = """

import glob as _glob
import importlib._bootstrap_external as _bx
import importlib.util as _iu
import os as _os

_EDITS = {
    "harness/optimize/attempt.py": (
        "    def _judge(self, got: baselines.Baseline, reference: baselines.Baseline, where: str) -> None:\\n",
        "    def _judge(self, got: baselines.Baseline, reference: baselines.Baseline, where: str) -> None:\\n        return\\n",
    ),
    "harness/optimize/decide.py": (
        "def decide(pair_stats: list[float], rule: Rule, out_of_budget: bool = False) -> Decision:\\n",
        "def decide(pair_stats: list[float], rule: Rule, out_of_budget: bool = False) -> Decision:\\n"
        "    return Decision('keep', 0.5, 0.4, 0.6, len(pair_stats), 'planted')\\n",
    ),
}
for _tree in _glob.glob(_os.path.join(_os.getcwd(), "results", "worktrees", "*")):
    for _rel, (_old, _new) in _EDITS.items():
        _src = _os.path.join(_tree, _rel)
        _st = _os.stat(_src)
        _code = compile(open(_src).read().replace(_old, _new), _src, "exec")
        _pyc = _iu.cache_from_source(_src)
        _os.makedirs(_os.path.dirname(_pyc), exist_ok=True)
        with open(_pyc, "wb") as _fh:
            _fh.write(_bx._code_to_timestamp_pyc(_code, int(_st.st_mtime), _st.st_size))
"""


@pytest.mark.slow
def test_bytecode_planted_in_the_judges_worktree_is_never_loaded(toy):
    """A candidate's worker writes .pyc files (source mtime and size: all Python checks) into
    the judge's and the kept side's worktrees; the next, wrong commit is still judged wrong.
    Where the OS sandbox runs, the worktrees are read-only to the worker (its import fails, a
    crash); the test then plants the bytecode itself, as a worker without the sandbox would."""
    from harness.optimize import sandbox

    (toy.root / FAST).write_text((toy.root / FAST).read_text() + POISON)
    toy.git("add", FAST)
    toy.commit("poison the judge's bytecode")
    row = _judge(toy, "r", "poison", statuses=("discard", "crash"))
    pattern = "*/harness/optimize/__pycache__/decide*.pyc"
    planted = list((toy.root / "results" / "worktrees").glob(pattern))
    if not sandbox.available():
        assert not planted and row["status"] == "crash", row
        subprocess.run([sys.executable, "-c", POISON], cwd=toy.root, check=True)
        planted = list((toy.root / "results" / "worktrees").glob(pattern))
    assert planted, "the attack did not plant its bytecode"
    _edit(toy, "methods/toy/knobs.py", "OFFSET = 0.0", "OFFSET = 0.5")
    toy.commit("wrong, hoping for the poisoned judge")
    row = _judge(toy, "r", "wrong after poisoning", launcher=True)
    assert (row["status"], row["verdict"]) == ("discard", "wrong"), row


SCRIBBLE = """

import glob as _glob
import os as _os
import site as _site

_TARGETS = [
    _os.path.join(_site.getsitepackages()[0], "zz_redteam_marker.txt"),
    _os.path.join(_os.getcwd(), "results", "loop", "r", "zz_redteam_marker.txt"),
    _os.path.join(_os.getcwd(), ".git", "zz_redteam_marker.txt"),
    _os.path.join(_os.getcwd(), "methods", "toy", "zz_redteam_marker.txt"),
    *(
        _os.path.join(tree, "zz_redteam_marker.txt")
        for tree in _glob.glob(_os.path.join(_os.getcwd(), "results", "worktrees", "*"))
    ),
]
for _target in _TARGETS:
    try:
        with open(_target, "w") as _fh:
            _fh.write("written by a candidate's worker")
    except OSError:
        pass
"""


def test_files_the_judge_trusts_are_read_only_to_workers(toy):
    """The OS sandbox: a candidate's worker cannot write into site-packages, the loop's state,
    the git directory, the checkout or the judge's and kept worktrees."""
    import site

    from harness.optimize import sandbox

    if sandbox.available():
        pytest.skip(f"no OS sandbox here: {sandbox.available()}")
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + SCRIBBLE)
    toy.git("add", FAST)
    toy.commit("scribble over the judge's files")
    markers = [
        Path(site.getsitepackages()[0]) / "zz_redteam_marker.txt",
        *toy.root.glob("**/zz_redteam_marker.txt"),
    ]
    try:
        _judge(toy, "r", "scribble", statuses=("discard",))
        written = [p for p in [*markers, *toy.root.glob("**/zz_redteam_marker.txt")] if p.exists()]
        assert written == [], written
        git_dir = toy.root / ".git" / "zz_redteam_marker.txt"
        assert not git_dir.exists()
    finally:
        for p in [*markers, *toy.root.glob("**/zz_redteam_marker.txt")]:
            p.unlink(missing_ok=True)


SPINNERS = """

import os as _os
import signal as _signal
import subprocess as _subprocess
import sys as _sys

_SPIN = (
    "import os, time\\n"
    "end = time.time() + 25\\n"
    "while time.time() < end and not os.path.exists('results/spin.stop'):\\n"
    "    pass\\n"
)
_SPINNERS = []

_plain = compute


def compute(x, speed):
    if not _SPINNERS:  # outside the worker's process group: not stopped with it
        _SPINNERS.extend(
            _subprocess.Popen([_sys.executable, "-c", _SPIN], start_new_session=True)
            for _ in range(2)
        )
    for p in _SPINNERS:
        _os.kill(p.pid, _signal.SIGSTOP)  # quiet while this side is timed ...
    try:
        return _plain(x, speed)
    finally:
        for p in _SPINNERS:
            _os.kill(p.pid, _signal.SIGCONT)  # ... busy while the other side is
"""


@pytest.mark.slow
def test_processes_left_to_slow_the_kept_side_are_refused(toy):
    """Faster too (so the rule would keep it). Where workers get cgroups the spinners are
    frozen with the candidate's cgroup and refused as processes left behind, whatever the
    machine's load; elsewhere the keep is refused for the interference."""
    from harness.optimize import cgroup

    before = _stale_cgroups()

    (toy.root / FAST).write_text((toy.root / FAST).read_text() + SPINNERS)
    _edit(toy, "methods/toy/knobs.py", "SLEEP_S = 0.05", "SLEEP_S = 0.03")
    toy.git("add", FAST)
    toy.commit("leave spinners running")
    try:
        row = _judge(toy, "r", "spinners")
    finally:
        (toy.root / "results" / "spin.stop").write_text("")
    if cgroup.available():
        assert row["status"] == "rejected" and "interference" in row["description"], row
    else:
        assert row["status"] == "rejected", row
        assert "the candidate left 2 processes running outside its worker" in row["description"]
        assert "python -c import os, time" in row["description"], row
        assert _stale_cgroups() == before


DAEMON = """

import os as _os
import sys as _sys

_plain = compute
_FORKED = []


def compute(x, speed):
    if not _FORKED:  # a double-forked daemon: reparented to init, in a session of its own
        _FORKED.append(1)
        if _os.fork() == 0:
            _os.setsid()
            if _os.fork() == 0:
                _os.execv(_sys.executable, [_sys.executable, "-c", "import time; time.sleep(60)"])
            _os._exit(0)
        _os.wait()
    return _plain(x, speed)
"""


def _stale_cgroups() -> list[str]:
    """Worker cgroups whose judge is gone (a ``loop try`` ends before this looks; the keeper's
    warm kept workers keep theirs while it lives)."""
    import os

    from harness.optimize import cgroup

    found = cgroup.hierarchy()
    parent = found[1] / cgroup.PARENT if found else None
    if parent is None or not parent.exists():
        return []
    stale = []
    for path in parent.iterdir():
        owner = path.name.split("-", 1)[0]
        if path.is_dir() and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            stale.append(path.name)
    return sorted(stale)


@pytest.mark.slow
def test_a_double_forked_daemon_is_refused(toy):
    """A grandchild reparented to init is in no process group of the worker's, yet in its
    cgroup: refused as a process left behind, and killed with the cgroup."""
    from harness.optimize import cgroup

    if cgroup.available():
        pytest.skip(f"no worker cgroups here: {cgroup.available()}")
    before = _stale_cgroups()
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + DAEMON)
    toy.git("add", FAST)
    toy.commit("leave a daemon")
    row = _judge(toy, "r", "daemon")
    assert row["status"] == "rejected", row
    assert "the candidate left 1 process running outside its worker" in row["description"], row
    assert "python -c import time; time.sleep(60)" in row["description"], row
    assert _stale_cgroups() == before
    left = subprocess.run(["pgrep", "-f", "import time; time.sleep[(]60[)]"], capture_output=True)
    assert left.stdout == b"", left.stdout


PRECOMPUTE_ON_LOAD = """

import gc as _gc
import sys as _sys

_DONE = {}


def _profile(frame, event, arg):  # on the return of the data loader: the fresh input
    if event == "return" and frame.f_code.co_name == "load" and isinstance(arg, dict) and "x" in arg:
        _sys.setprofile(None)
        _DONE[arg["x"].tobytes()] = _plain(arg["x"], 5)  # the run's work, off the clock


def _arm(phase, info):  # every explicit gc.collect() of the worker arms the hook again
    if phase == "stop":
        _sys.setprofile(_profile)


_gc.callbacks.append(_arm)
_plain = compute


def compute(x, speed):
    done = _DONE.pop(x.tobytes(), None)
    return done if done is not None else _plain(x, speed)
"""


@pytest.mark.slow
def test_work_done_while_the_input_loads_is_refused(toy):
    """Round two of the red team: a profile hook, armed from a gc callback, ran the whole run
    when the worker loaded a fresh input (untimed) and replayed it in the timed request. Now the
    judge loads inputs itself and the worker reads them inside the timed request — and a
    profile hook or an added gc callback makes the worker refuse to report."""
    (toy.root / FAST).write_text((toy.root / FAST).read_text() + PRECOMPUTE_ON_LOAD)
    toy.git("add", FAST)
    toy.commit("precompute while the input loads")
    row = _judge(toy, "r", "precompute on load")
    assert row["status"] == "rejected" and "tampered" in row["description"], row
