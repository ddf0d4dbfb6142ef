"""The keep/discard loop in a temporary git repo with a toy method the tests control — and the
red team: every way a candidate (or its agent) might bend the judge, each ending with the
branch back at the kept commit, a rejected/discard row with the reason, and the diff saved."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from harness.optimize.decide import Rule, decide
from harness.sinks.results_tsv import read_rows
from tests.loop.loop_repo import TOY, LoopRepo

FAST = "methods/toy/fast.py"
SLOW = """
def slow(x, speed):
    time.sleep(knobs.SLEEP_S * speed / 5)
    return x * 2.0 + knobs.OFFSET
"""
HEADER = (
    "import time\n\nimport numpy as np\n\nfrom methods.toy import knobs\n\n\n"
    "def stage(x):  # called by prepare\n    return x\n"
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Iterator[LoopRepo]:
    r = LoopRepo(tmp_path_factory.mktemp("looprepo"))
    (r.root / "scratch.txt").write_text("uncommitted")
    refused = r.loop("start", "tag=t", *TOY)
    assert refused.returncode == 2 and "uncommitted" in refused.stderr
    assert "autoresearch/t" not in r.git("branch")
    (r.root / "scratch.txt").unlink()
    started = r.loop("start", "tag=t", *TOY)
    assert started.returncode == 0, started.stderr
    assert r.git("branch", "--show-current") == "autoresearch/t"
    yield r
    from harness.optimize.keeper import shutdown

    shutdown(r.root / "results" / "loop" / "t" / "keeper.sock")  # the warm kept workers


def _rows(repo: LoopRepo) -> list[dict[str, str]]:
    return read_rows(repo.root / "results" / "results.tsv")


def _state(repo: LoopRepo) -> dict:
    return json.loads((repo.root / "results" / "loop" / "t.json").read_text())


def _try(repo: LoopRepo, description: str, *extra: str, code: int = 0) -> dict[str, str]:
    proc = repo.loop("try", "-d", description, *extra)
    assert proc.returncode == code, proc.stderr + proc.stdout
    return _rows(repo)[-1]


def _judged(repo: LoopRepo, change: str, *extra: str) -> dict[str, str]:
    """Try the committed HEAD; it must be discarded or rejected and reverted, diff saved."""
    kept = _state(repo)["kept"]
    head = repo.head()
    row = _try(repo, change, *extra)
    assert row["status"] in ("discard", "rejected"), row
    assert repo.head() == kept and _state(repo)["kept"] == kept
    patches = list((repo.root / "results" / "attempts" / "t").glob(f"*-{head[:8]}-*.patch"))
    assert patches, "the diff was not saved"
    return row


@pytest.mark.slow
def test_start_records_its_baseline_from_the_start_commit(repo):
    rows = [r for r in _rows(repo) if r["status"] == "baseline" and r["tag"] == "t"]
    assert rows and _state(repo)["base"].startswith(rows[0]["commit"])
    assert rows[0]["dirty"] in ("", "False", "false", "0")


def test_start_freezes_the_rules(repo):
    row = _rows(repo)[0]
    assert (row["status"], row["tag"]) == ("baseline", "t")
    frozen = _state(repo)["frozen"]
    assert frozen["editable"] == ["methods/toy/knobs.py", "methods/toy/fast.py"]
    assert frozen["accept"] == ["exact", "close"] and "numpy" in frozen["declared_imports"]
    assert set(frozen["check_fields"]) == {"seed", "size"} and frozen["check_fields"]["size"] == 32
    loop_dir = repo.root / "results" / "loop" / "t"
    assert (loop_dir / "baseline.npz").exists() and (loop_dir / "check.npz").exists()
    again = repo.loop("start", "tag=t", *TOY)
    assert again.returncode == 2 and "choose another tag" in again.stderr


# ---- the keep rule ---------------------------------------------------------------------------
@pytest.mark.slow
def test_unchanged_code_is_discarded_and_reverted(repo):
    repo.set_knob("SLEEP_S", "0.050", "A/A: same speed")
    row = _judged(repo, "same speed")
    assert (row["status"], row["verdict"]) == ("discard", "exact")
    assert "gain" in row["description"] and "pairs" in row["description"]


@pytest.mark.slow
def test_planted_slowdown_is_discarded(repo):
    repo.set_knob("SLEEP_S", "0.07", "slower")
    row = _judged(repo, "slower")
    assert row["status"] == "discard" and "not gain" in row["description"]


def test_real_speedup_is_kept_then_status(repo):
    repo.set_knob("SLEEP_S", "0.03", "faster")
    head = repo.head()
    row = _try(repo, "sleep less")
    assert (row["status"], row["verdict"]) == ("keep", "exact"), row["description"]
    assert repo.head() == head and _state(repo)["kept"] == head
    attempt = _state(repo)["attempts"][-1]
    assert attempt["gain_lo"] > 0.01 and attempt["pairs"] >= 2 and len(attempt["draws"]) >= 6
    # the kept commit's workers stayed warm in the keeper: one log per pair slot, reused
    kept_logs = list((repo.root / "results" / "attempts" / "t").glob("kept-*-slot*.log"))
    assert kept_logs
    status = repo.loop("status")
    assert status.returncode == 0 and "1 kept" in status.stdout and "estimate" in status.stdout
    assert "warm worker(s)" in status.stdout and "slot 1: pid" in status.stdout, status.stdout


@pytest.mark.slow
def test_neutral_simplification_is_kept_as_neutral(repo):
    text = (repo.root / FAST).read_text().replace("return x * 2.0", "return 2.0 * x")
    repo.write(FAST, text, "equal result, rewritten")
    row = _try(repo, "rewrite", "--neutral")
    assert (row["status"], row["verdict"]) == ("keep-neutral", "exact"), row["description"]


@pytest.mark.slow
def test_a_fresh_candidate_is_warmed_like_the_kept_workers(repo):
    """Unchanged speed, but the first full run in every process is slow (allocator growth,
    lazy initialisation): the kept workers are warm across tries and each candidate is new, so
    without the untimed warm round (``loop.warm_round``) the candidate's first timed round of
    every pair after the first is slow and the neutral change is discarded."""
    cold = (
        HEADER
        + """
_CALLS = [0]


def compute(x, speed):
    if knobs.CRASH:
        raise RuntimeError("planted crash")
    _CALLS[0] += 1  # call 1: the process's first full run (workers start lazily: no
    cold = 8 * knobs.SLEEP_S if _CALLS[0] == 1 else 0.0  # run at start-up, the warm round's)
    time.sleep(3600 if knobs.HANG else knobs.SLEEP_S * speed / 5 + cold)
    return x * 2.0 + knobs.OFFSET
"""
    )
    repo.write(FAST, cold, "same speed once warm")
    row = _try(repo, "cold first run", "--neutral")
    assert (row["status"], row["verdict"]) == ("keep-neutral", "exact"), row["description"]


# ---- red team: the rules cannot be bent -------------------------------------------------------
def test_try_with_a_loosening_override_is_refused_and_reverted(repo):
    repo.set_knob("OFFSET", "0.5", "wrong, hoping for a looser gate")
    kept = _state(repo)["kept"]
    proc = repo.loop("try", "-d", "x", "correctness.accept=[exact,close,wrong]")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "try takes no overrides" in lines[0], proc.stderr
    row = _rows(repo)[-1]
    assert row["status"] == "rejected" and "frozen at start" in row["description"]
    assert repo.head() == kept


def test_commit_widening_its_own_editable_list_is_rejected(repo):
    path = repo.root / "conf" / "method" / "toy.yaml"
    text = path.read_text().replace(
        "methods/toy/fast.py]", "methods/toy/fast.py, methods/toy/method.py]"
    )
    repo.write("conf/method/toy.yaml", text, "widen my surface")
    row = _judged(repo, "widen surface")
    assert row["status"] == "rejected" and "conf/method/toy.yaml" in row["description"]


def test_commit_editing_the_check_is_rejected(repo):
    path = repo.root / "methods" / "toy" / "method.py"
    text = path.read_text().replace("err <= 1e-6", "err <= 1e6")
    repo.write("methods/toy/method.py", text, "loosen the tolerance")
    row = _judged(repo, "edit the check")
    assert row["status"] == "rejected" and "methods/toy/method.py" in row["description"]
    assert "1e-6" in path.read_text()


@pytest.mark.parametrize(
    ("module", "named"),
    [("llvmlite", "llvmlite (not declared"), ("harness.bench.hashing", "harness internals")],
)
def test_commit_importing_an_undeclared_package_is_rejected(repo, module, named):
    text = (repo.root / FAST).read_text().replace("import time", f"import time\nimport {module}")
    repo.write(FAST, text, f"use {module}")
    row = _judged(repo, f"import {module}")
    assert row["status"] == "rejected" and named in row["description"]


CHEATS = {
    "a memo keyed on the input bytes": """
_MEMO = {}
def compute(x, speed):
    key = x.tobytes()
    if key not in _MEMO:
        _MEMO[key] = slow(x, speed)
    return _MEMO[key]
""",
    "the same memo persisted to a file": """
import hashlib, pathlib, pickle
_FILE = pathlib.Path("/tmp/toy-memo.pkl")
def compute(x, speed):
    memo = pickle.loads(_FILE.read_bytes()) if _FILE.exists() else {}
    key = hashlib.sha256(x.tobytes()).hexdigest()
    if key not in memo:
        memo[key] = slow(x, speed)
        _FILE.write_bytes(pickle.dumps(memo))
    return memo[key]
""",
    "the first call's result forever": """
_FIRST = []
def compute(x, speed):
    if not _FIRST:
        _FIRST.append(slow(x, speed))
    return _FIRST[0]
""",
    "right for two calls, zeros afterwards": """
_CALLS = [0]
def compute(x, speed):
    _CALLS[0] += 1
    return slow(x, speed) if _CALLS[0] <= 2 else np.zeros_like(x)
""",
    "right on the benchmark input only": """
_BENCH = np.random.default_rng(2025).random(64)
def compute(x, speed):
    if x.shape == _BENCH.shape and np.array_equal(x, _BENCH):
        return slow(x, speed)
    return x * 2.0 + 0.001
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("cheat", list(CHEATS))
def test_planted_cheats_are_not_kept(repo, cheat):
    repo.write(FAST, HEADER + SLOW + CHEATS[cheat], cheat)
    row = _judged(repo, cheat)
    assert row["status"] == "discard"
    if cheat.startswith(("a memo", "the same memo")):  # right, but never faster on fresh inputs
        assert row["verdict"] == "exact" and "gain" in row["description"]
    else:
        assert row["verdict"] == "wrong"


def test_planted_wrong_output_is_discarded(repo):
    repo.set_knob("OFFSET", "0.5", "wrong")
    row = _judged(repo, "wrong output")
    assert (row["status"], row["verdict"]) == ("discard", "wrong")
    assert "benchmark input" in row["description"]


@pytest.mark.slow
def test_planted_crash_is_recorded_and_reverted(repo):
    repo.set_knob("CRASH", "True", "crash")
    row = _try(repo, "crash")
    assert (row["status"], row["output_hash"]) == ("crash", "CRASH")
    assert repo.head() == _state(repo)["kept"]
    logs = list((repo.root / "results" / "attempts" / "t").glob("*-candidate-*.log"))
    assert any("planted crash" in p.read_text() for p in logs)


@pytest.mark.slow
def test_planted_hang_times_out_and_reverts(repo):
    repo.set_knob("HANG", "True", "hang")
    row = _try(repo, "hang")
    assert (row["status"], row["output_hash"]) == ("timeout", "TIMEOUT")
    assert repo.head() == _state(repo)["kept"]


def test_dirty_tree_refused_untouched(repo):
    path = repo.root / "methods" / "toy" / "knobs.py"
    path.write_text(path.read_text() + "# wip\n")
    head = repo.head()
    proc = repo.loop("try", "-d", "dirty")
    assert proc.returncode == 2 and "uncommitted" in proc.stderr
    assert path.read_text().endswith("# wip\n") and repo.head() == head
    repo.git("checkout", "--", "methods/toy/knobs.py")


@pytest.mark.slow
def test_edited_state_file_is_refused(repo):
    path = repo.root / "results" / "loop" / "t.json"
    original = path.read_text()
    state = json.loads(original)
    state["frozen"]["accept"] = ["exact", "close", "wrong"]
    path.write_text(json.dumps(state))
    repo.set_knob("OFFSET", "0.25", "wrong, with an edited state")
    proc = repo.loop("try", "-d", "x")
    assert proc.returncode == 2 and "frozen at start" in proc.stderr
    path.write_text(original)
    row = _judged(repo, "wrong after restore")
    assert row["verdict"] == "wrong"


@pytest.mark.slow
def test_stop_ends_the_keeper_and_drop_lets_start_reuse_the_tag(repo):

    from harness.optimize.keeper import query

    sock = repo.root / "results" / "loop" / "t" / "keeper.sock"
    listing = query(sock)
    assert listing is not None and listing["workers"], "a try left no warm kept workers"
    pids = [listing["pid"], *(w["pid"] for w in listing["workers"])]
    stopped = repo.loop("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert not sock.exists() and query(sock) is None

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    assert not any(alive(p) for p in pids), "the keeper or a worker outlived `loop stop`"
    kept = _state(repo)["kept"]
    dropped = repo.loop("drop", "tag=t")
    assert dropped.returncode == 0, dropped.stderr
    aside = [b.strip(" *") for b in repo.git("branch").splitlines() if "t-dropped-" in b]
    assert len(aside) == 1 and repo.git("rev-parse", aside[0]) == kept  # nothing lost
    assert (repo.root / "results" / "loop" / (aside[0].split("/")[1] + ".json")).exists()
    attempts = repo.root / "results" / "attempts"
    assert (attempts / aside[0].split("/")[1]).is_dir() and not (attempts / "t").exists()
    repo.git("checkout", "-q", "main")
    again = repo.loop("start", "tag=t", *TOY)
    assert again.returncode == 0, again.stderr
    assert repo.git("branch", "--show-current") == "autoresearch/t"


# ---- the rule itself ---------------------------------------------------------------------------
def test_sequential_rule():
    rule = Rule(min_gain=0.01, alpha=0.01, min_pairs=2, max_pairs=6, pair_sd=0.02)
    assert decide([-0.2, -0.2], rule).action == "keep"  # a large gain: two pairs suffice
    assert decide([0.05, 0.06], rule).action == "discard"  # clearly slower: futile
    assert decide([-0.04, -0.03], rule).action == "continue"  # unclear: another pair
    small = decide([-0.02, -0.01], rule)  # credibly below loop.detect (4%): not worth more pairs
    assert small.action == "discard" and small.stop == "futile"
    # the reason names the bound that decided, which the wider printed interval is not
    bound = float(small.reason.split("90% upper bound ")[1].split("%")[0]) / 100
    assert bound < rule.detect < small.gain_hi, small.reason
    assert decide([-0.04, -0.03, -0.035], rule, out_of_budget=True).stop == "budget"
    noisy = decide([-0.3, 0.2, -0.25], rule)  # the pairs disagree: their spread, not the floor
    assert noisy.action == "continue" and noisy.gain_lo < 0
    neutral = Rule(neutral=True, max_slowdown=0.01, pair_sd=0.005)
    assert decide([0.0, -0.001, 0.0], neutral).action == "keep"


@pytest.mark.slow
def test_neutral_after_a_close_keep_is_judged_against_the_kept_commit(repo):
    """After a close keep every later candidate is close against the loop's start; --neutral
    asks for outputs identical to the kept commit's, not to the start's."""
    repo.set_knob("OFFSET", "1e-9", "close")
    repo.set_knob("SLEEP_S", "0.015", "faster, and close")
    row = _try(repo, "faster, close")
    assert (row["status"], row["verdict"]) == ("keep", "close"), row["description"]
    text = (repo.root / FAST).read_text().replace("return x * 2.0", "return 2.0 * x")
    repo.write(FAST, text, "equal result, rewritten again")
    row = _try(repo, "rewrite after a close keep", "--neutral")
    assert row["status"] == "keep-neutral", row["description"]
    repo.set_knob("OFFSET", "2e-9", "close again")
    row = _judged(repo, "close is not neutral", "--neutral")
    assert "identical to the kept commit" in row["description"], row["description"]
