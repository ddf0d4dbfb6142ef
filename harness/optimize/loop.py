"""``python -m harness.loop``: the git keep/discard loop with a noise-aware keep rule.

    python -m harness.loop start tag=nov22 [overrides...]   # branch autoresearch/nov22 + baseline
    python -m harness.loop try -d "fuse spline lookup"      # bench HEAD; keep it or revert it
    python -m harness.loop status [tag=nov22]

``try`` benchmarks the committed HEAD against the last kept commit: correctness first (the
verdict against the baseline must be in ``correctness.accept``), then speed, measured by
interleaving runs of both commits in two long-lived workers (A B B A ...). Anything not kept is
saved to ``results/attempts/<tag>/`` as a patch and the branch is reset to the kept commit.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness.core.errors import UserError, report_user_errors
from harness.optimize.state import LoopState

BRANCH_PREFIX = "autoresearch/"
USAGE = "usage: python -m harness.loop {start|try|status} [tag=T] [-d DESCRIPTION] [overrides...]"


def parse_args(argv: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """Split argv into the subcommand, loop options (tag, description) and Hydra overrides."""
    if not argv or argv[0] not in ("start", "try", "status"):
        raise UserError(USAGE)
    command, opts, overrides = argv[0], {}, []
    rest = iter(argv[1:])
    for arg in rest:
        if arg in ("-d", "--description"):
            opts["description"] = next(rest, "")
        elif arg.startswith(("tag=", "description=")):
            key, value = arg.split("=", 1)
            opts[key] = value
        else:
            overrides.append(arg)
    return command, opts, overrides


def _results_dir(overrides: list[str]) -> Path:
    from harness.config.compose import compose_checked

    cfg, valid = compose_checked(overrides)
    return (Path.cwd() / valid.top.paths.results).resolve()


def _tag_from_branch(repo) -> str:
    branch = repo.active_branch.name if not repo.head.is_detached else ""
    if not branch.startswith(BRANCH_PREFIX):
        raise UserError(
            f"not on an {BRANCH_PREFIX}<tag> branch ({branch or 'detached HEAD'}); pass tag=<tag>"
        )
    return branch.removeprefix(BRANCH_PREFIX)


def start(tag: str, overrides: list[str]) -> None:
    """Create ``autoresearch/<tag>`` from a clean HEAD and benchmark the baseline."""
    from harness.optimize import gitops

    if not tag or "/" in tag or " " in tag:
        raise UserError("loop start: tag=<name> is required (no spaces or slashes)")
    repo = gitops.repo_at(Path.cwd())
    gitops.require_clean(repo)
    results = _results_dir(overrides)  # validates the overrides before touching git
    branch = BRANCH_PREFIX + tag
    if branch in [h.name for h in repo.heads]:
        raise UserError(f"loop start: branch {branch} already exists; choose another tag")
    if LoopState.path(results, tag).exists():
        raise UserError(f"loop start: {LoopState.path(results, tag)} exists; choose another tag")
    previous = repo.active_branch.name if not repo.head.is_detached else repo.head.commit.hexsha
    repo.git.checkout("-b", branch)
    cmd = [sys.executable, "-m", "harness", *overrides, "bench.baseline=save"]
    cmd += ["run.status=baseline", f"run.tag={tag}", "run.description=loop baseline"]
    print(f"loop {tag}: baseline on {branch} @ {repo.head.commit.hexsha[:12]}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        repo.git.checkout(previous)
        repo.git.branch("-D", branch)
        raise UserError(f"loop start: the baseline benchmark failed; {branch} removed")
    head = repo.head.commit.hexsha
    LoopState(tag=tag, branch=branch, base=head, kept=head, overrides=overrides).save(results)
    print(f"loop {tag}: started; commit one change, then: python -m harness.loop try -d '...'")


def try_head(
    tag: str | None, description: str, extra: list[str], candidate_extra: list[str] | None = None
) -> str:
    """Judge the committed HEAD; returns the status (keep, discard, crash, timeout).

    ``candidate_extra`` are overrides for the candidate only (e.g. a new tuned-parameters
    file); when it is kept they join the loop's overrides.
    """
    from harness.optimize import gitops
    from harness.optimize.attempt import Attempt

    repo = gitops.repo_at(Path.cwd())
    tag = tag or _tag_from_branch(repo)
    if not description:
        raise UserError('loop try: describe the change in one line: -d "..."')
    results = _results_dir(extra)
    state = LoopState.load(results, tag)
    if repo.head.is_detached or repo.active_branch.name != state.branch:
        raise UserError(f"loop try: check out {state.branch} first")
    gitops.require_clean(repo)
    head = repo.head.commit.hexsha
    if head == state.kept:
        raise UserError("loop try: HEAD is the last kept commit; commit your change first")
    attempt = Attempt(
        repo, state, results, description, state.overrides + extra, candidate_extra or []
    )
    status = attempt.run()
    state.attempts.append(
        {
            "n": len(state.attempts) + 1,
            "commit": head,
            "status": status,
            "description": description,
            "reason": attempt.reason,
            "speedup": attempt.speedup,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    if status == "keep":
        state.kept = head
        state.overrides += [o for o in candidate_extra or [] if o not in state.overrides]
    state.save(results)
    print(f"loop {tag}: {status.upper()} {head[:12]} - {attempt.reason}", flush=True)
    return status


def status(tag: str | None, overrides: list[str]) -> None:
    """Kept commits, attempts and the best speedup so far."""
    from harness.optimize import gitops

    if not tag:
        tag = _tag_from_branch(gitops.repo_at(Path.cwd()))
    results = _results_dir(overrides)
    state = LoopState.load(results, tag)
    total = 1.0
    print(f"loop {tag}  branch {state.branch}  base {state.base[:12]}  kept {state.kept[:12]}")
    print(f"{'#':>3}  {'status':8} {'commit':12} {'speedup':>8}  description / reason")
    for a in state.attempts:
        speed = f"{a['speedup']:.3f}x" if a.get("speedup") else "-"
        if a["status"] == "keep" and a.get("speedup"):
            total *= a["speedup"]
        print(
            f"{a['n']:>3}  {a['status']:8} {a['commit'][:12]} {speed:>8}  {a['description']} | {a['reason']}"
        )
    kept = sum(a["status"] == "keep" for a in state.attempts)
    print(f"{len(state.attempts)} attempts, {kept} kept; cumulative speedup over base {total:.3f}x")


def run(argv: list[str]) -> None:
    """Dispatch a subcommand."""
    command, opts, overrides = parse_args(argv)
    if command == "start":
        start(opts.get("tag", ""), overrides)
    elif command == "try":
        try_head(opts.get("tag"), opts.get("description", ""), overrides)
    else:
        status(opts.get("tag"), overrides)


def main(argv: list[str] | None = None) -> int:
    return report_user_errors(lambda: run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
