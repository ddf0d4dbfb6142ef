"""The keep/discard loop in a temporary git repo with a toy method the tests control."""

from __future__ import annotations

import json

import pytest

from harness.optimize.workers import decide, split_rounds
from harness.sinks.results_tsv import read_rows
from tests.loop_repo import TOY, LoopRepo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> LoopRepo:
    r = LoopRepo(tmp_path_factory.mktemp("looprepo"))
    (r.root / "scratch.txt").write_text("uncommitted")
    refused = r.loop("start", "tag=t", *TOY)
    assert refused.returncode == 2 and "uncommitted" in refused.stderr
    assert "autoresearch/t" not in r.git("branch")
    (r.root / "scratch.txt").unlink()
    started = r.loop("start", "tag=t", *TOY)
    assert started.returncode == 0, started.stderr
    assert r.git("branch", "--show-current") == "autoresearch/t"
    return r


def _last_row(repo: LoopRepo) -> dict[str, str]:
    return read_rows(repo.root / "results" / "results.tsv")[-1]


def _state(repo: LoopRepo) -> dict:
    return json.loads((repo.root / "results" / "loop" / "t.json").read_text())


def _try(repo: LoopRepo, description: str, *extra: str):
    proc = repo.loop("try", "-d", description, *extra)
    assert proc.returncode == 0, proc.stderr
    return _last_row(repo)


def test_baseline_recorded(repo):
    row = read_rows(repo.root / "results" / "results.tsv")[0]
    assert (row["status"], row["tag"]) == ("baseline", "t")


def test_unchanged_code_is_discarded_and_reverted(repo):
    kept = _state(repo)["kept"]
    repo.set_knob("SLEEP_S", "0.050", "A/A: same speed")
    row = _try(repo, "same speed")
    assert (row["status"], row["verdict"]) == ("discard", "exact")
    assert repo.head() == kept
    assert list((repo.root / "results" / "attempts" / "t").glob("*-discard.patch"))


def test_planted_slowdown_is_discarded(repo):
    kept = _state(repo)["kept"]
    repo.set_knob("SLEEP_S", "0.07", "slower")
    row = _try(repo, "slower")
    assert row["status"] == "discard" and "not faster" in row["description"]
    assert repo.head() == kept


def test_planted_wrong_output_is_discarded(repo):
    kept = _state(repo)["kept"]
    repo.set_knob("OFFSET", "0.5", "wrong")
    row = _try(repo, "wrong output")
    assert (row["status"], row["verdict"]) == ("discard", "wrong")
    assert repo.head() == kept


def test_edit_outside_surface_is_rejected(repo):
    kept = _state(repo)["kept"]
    path = repo.root / "methods" / "toy" / "method.py"
    path.write_text(path.read_text() + "\n# tampering\n")
    repo.commit("outside")
    row = _try(repo, "edit read-only file")
    assert row["status"] == "discard" and "outside the editable surface" in row["description"]
    assert repo.head() == kept and "tampering" not in path.read_text()


def test_planted_crash_is_recorded_and_reverted(repo):
    kept = _state(repo)["kept"]
    repo.set_knob("CRASH", "True", "crash")
    row = _try(repo, "crash")
    assert (row["status"], row["output_hash"]) == ("crash", "CRASH")
    assert repo.head() == kept
    assert list((repo.root / "results" / "attempts" / "t").glob("*-crash.patch"))
    logs = list((repo.root / "results" / "attempts" / "t").glob("*-candidate.log"))
    assert any("planted crash" in p.read_text() for p in logs)


def test_planted_hang_times_out_and_reverts(repo):
    kept = _state(repo)["kept"]
    repo.set_knob("HANG", "True", "hang")
    row = _try(repo, "hang", "bench.timeout_s=15")
    assert (row["status"], row["output_hash"]) == ("timeout", "TIMEOUT")
    assert repo.head() == kept


def test_real_speedup_is_kept_then_status(repo):
    repo.set_knob("SLEEP_S", "0.03", "faster")
    head = repo.head()
    row = _try(repo, "sleep less", "loop.pairs=2")  # rounds spread over two worker pairs
    assert (row["status"], row["verdict"]) == ("keep", "exact")
    assert "per pair" in row["description"]
    logs = [p.name for p in (repo.root / "results" / "attempts" / "t").glob("*.log")]
    assert any(name.endswith("-kept-2.log") for name in logs)
    assert repo.head() == head and _state(repo)["kept"] == head
    status = repo.loop("status")
    assert status.returncode == 0 and "1 kept" in status.stdout


def test_dirty_tree_refused_untouched(repo):
    path = repo.root / "methods" / "toy" / "knobs.py"
    path.write_text(path.read_text() + "# wip\n")
    head = repo.head()
    proc = repo.loop("try", "-d", "dirty")
    assert proc.returncode == 2 and "uncommitted" in proc.stderr
    assert path.read_text().endswith("# wip\n") and repo.head() == head
    repo.git("checkout", "--", "methods/toy/knobs.py")


def test_split_rounds_and_per_pair_agreement():
    assert split_rounds(9, 3) == [3, 3, 3] and split_rounds(5, 3) == [2, 2, 1]
    a = [1.0] * 6
    fast_everywhere = [0.9] * 6
    assert decide(a, fast_everywhere, 0.01, 1.5, [3, 3]).keep
    # one worker pair fast, the other not: a per-process effect, not a reliable speedup
    one_pair_only = [0.8, 0.8, 0.8, 1.0, 1.0, 1.0]
    assert decide(a, one_pair_only, 0.01, 0.0).keep  # pooled over pairs it would pass...
    assert not decide(a, one_pair_only, 0.01, 0.0, [3, 3]).keep  # ...pair by pair it does not
