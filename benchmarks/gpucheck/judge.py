"""Check 4: the judge on the device. ``python -m harness.compare`` (the real command, run from
this checkout) of HEAD against HEAD on RCTD — the A/A: the per-pair ratios give the device's
pair noise (the sd of the pairs' mean log ratios, what ``loop.pair_sd`` floors) — and of HEAD
against a planted slowdown: a commit object (never on a branch, HEAD and the work tree
untouched) whose RCTD solver (``solve_irwls``) sleeps a fixed fraction of its own
device-synchronised time.
The compare's git worktrees are removed afterwards."""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from gpucheck.common import OK, REPO, WARN, Pack, Row, guarded

PLANT = """

# ---- planted by benchmarks/gpucheck/judge.py: a known slowdown for harness.compare ----
def solve_irwls(y, numi, profiles, tables, **kwargs):
    import time as _time

    t0 = _time.perf_counter()
    out = _unplanted_solve_irwls(y, numi, profiles, tables, **kwargs)
    if profiles.is_cuda:
        torch.cuda.synchronize(profiles.device)
    _time.sleep({fraction} * (_time.perf_counter() - t0))
    return out
"""
PLANTED_FILE = "methods/rctd/solver.py"  # editable surface: the seal does not cover it


def _git(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def planted_commit(fraction: float) -> str:
    """A commit on top of HEAD whose RCTD solver sleeps ``fraction`` of its own time."""
    source = _git("show", f"HEAD:{PLANTED_FILE}")
    if source.count("def solve_irwls(") != 1:
        raise RuntimeError(f"{PLANTED_FILE}: no single solve_irwls to plant a slowdown in")
    source = source.replace("def solve_irwls(", "def _unplanted_solve_irwls(")
    source += PLANT.format(fraction=fraction)
    with tempfile.TemporaryDirectory() as tmp:
        blob_file = Path(tmp) / "solver.py"
        blob_file.write_text(source)
        blob = _git("hash-object", "-w", str(blob_file))
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git("read-tree", "HEAD", env=env)
        _git("update-index", "--cacheinfo", f"100644,{blob},{PLANTED_FILE}", env=env)
        tree = _git("write-tree", env=env)
    msg = f"planted: RCTD solver {fraction:.0%} slower (benchmarks/gpucheck)"
    ident = {"GIT_AUTHOR_NAME": "gpucheck", "GIT_AUTHOR_EMAIL": "gpucheck@localhost",
             "GIT_COMMITTER_NAME": "gpucheck", "GIT_COMMITTER_EMAIL": "gpucheck@localhost"}  # fmt: skip
    return _git("commit-tree", tree, "-p", "HEAD", "-m", msg, env={**os.environ, **ident})


def compare(pack: Pack, rev_b: str, label: str) -> dict:
    """Run ``python -m harness.compare HEAD rev_b`` on RCTD; its exit code and figures."""
    # the compare's workers take their thread count from compare.launch.threads
    rctd = ["method=rctd", *pack.common(threads=False), *pack.sizes.judge]
    args = [sys.executable, "-m", "harness.compare", "HEAD", rev_b, *rctd]
    print(f"--- {' '.join(args[1:])}", file=pack.log, flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    (pack.out / f"compare-{label}.log").write_text(proc.stdout + proc.stderr)
    text = proc.stdout
    speed = re.search(r"speed-up A→B: ([0-9.]+)x\s+\[([0-9.inf]+), ([0-9.inf]+)\]", text)
    ratios = re.search(r"B/A ratio per worker pair: (.*)", text)
    same = re.search(r"identical on (\d+)/(\d+) fresh", text)  # hashes equal on every input
    if proc.returncode not in (0, 1) or not speed or not ratios:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"harness.compare exited {proc.returncode}: {tail[0][:200]}")
    logs = [math.log(float(r)) for r in ratios.group(1).split()]
    sd = statistics.stdev(logs) if len(logs) > 1 else None
    return {
        "exit": proc.returncode,
        "speedup": float(speed.group(1)),
        "interval": f"[{speed.group(2)}, {speed.group(3)}]",
        "pairs": len(logs),
        "pair_sd": None if sd is None else round(sd, 4),
        "same_outputs": bool(same) and same.group(1) == same.group(2),
    }


def _remove_worktrees(pack: Pack) -> None:
    for side in "ab":
        path = pack.work / "worktrees" / f"compare-{side}"
        if path.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO,
                           capture_output=True)  # fmt: skip
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True)


def check_judge(pack: Pack) -> list[Row]:
    """Check 4 (module doc)."""
    rows: list[Row] = []

    def aa(row: Row) -> None:
        got = compare(pack, "HEAD", "aa")
        row.figures.update(got)
        flagged = got["exit"] == 1
        row.status = WARN if flagged or not got["same_outputs"] else OK
        row.note = "A/A: HEAD vs HEAD" + ("; flagged a regression (noise)" if flagged else "")

    def planted(row: Row) -> None:
        fraction = pack.sizes.planted
        got = compare(pack, planted_commit(fraction), "planted")
        row.figures.update(got)
        row.variant = f"planted +{fraction:.0%} solver time"
        found = got["exit"] == 1
        row.status = OK if found else WARN
        row.note = "regression found" if found else "regression NOT found within the budget"

    try:
        guarded(pack, rows, Row("judge", "rctd", "A/A", pack.device), aa)
        guarded(pack, rows, Row("judge", "rctd", "planted", pack.device), planted)
    finally:
        _remove_worktrees(pack)
    return rows
