"""``python -m harness.loop``: the git keep/discard loop, judged by rules frozen at start.

    python -m harness.loop start tag=nov22 [overrides...]   # branch autoresearch/nov22 + baselines
    python -m harness.loop try -d "fuse spline lookup" [--neutral]
    python -m harness.loop status [tag=nov22] [--measure]
    python -m harness.loop stop [tag=nov22]      # end the loop's keeper and its warm workers
    python -m harness.loop drop tag=nov22        # set the loop aside; start can reuse the tag

``start`` freezes everything that defines the task and the judgement (see
:mod:`harness.optimize.state`), stores the loop's own baselines (the benchmark input and a
held-out check input), and keeps a worktree of the start commit: every ``try`` re-executes
itself from that worktree, so the judge's code is the start commit's, never the candidate's.
``try`` takes only ``-d``, ``tag=`` and ``--neutral``: anything else would change the task or
the gate, and is refused (and the candidate with it).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.core.errors import UserError, report_user_errors

BRANCH_PREFIX = "autoresearch/"
USAGE = (
    "usage: python -m harness.loop start tag=T [overrides...] | try -d DESCRIPTION [tag=T] "
    "[--neutral] | status [tag=T] [--measure] | stop [tag=T] | drop tag=T"
)


def parse_args(argv: list[str]) -> tuple[str, dict[str, Any], list[str]]:
    """Split argv into the subcommand, loop options and (for start) Hydra overrides."""
    if not argv or argv[0] not in ("start", "try", "status", "stop", "drop"):
        raise UserError(USAGE)
    command, opts, rest = argv[0], {}, []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-d", "--description"):
            opts["description"] = next(args, "")
        elif arg.startswith(("tag=", "description=")):
            key, value = arg.split("=", 1)
            opts[key] = value
        elif arg in ("--neutral", "--measure"):
            opts[arg.lstrip("-")] = True
        else:
            rest.append(arg)
    return command, opts, rest


def _repo() -> Any:
    from harness.optimize import gitops

    return gitops.repo_at(Path.cwd())


def _tag_from_branch(repo: Any) -> str:
    branch = repo.active_branch.name if not repo.head.is_detached else ""
    if not branch.startswith(BRANCH_PREFIX):
        raise UserError(
            f"not on an {BRANCH_PREFIX}<tag> branch ({branch or 'detached HEAD'}); pass tag=<tag>"
        )
    return branch.removeprefix(BRANCH_PREFIX)


# ---- start ----------------------------------------------------------------------------------
def start(tag: str, overrides: list[str]) -> None:
    """Create ``autoresearch/<tag>``, store the loop's baselines, freeze the rules."""
    from harness.optimize import gitops
    from harness.optimize.setup import freeze

    if not tag or "/" in tag or " " in tag:
        raise UserError("loop start: tag=<name> is required (no spaces or slashes)")
    repo = _repo()
    gitops.require_clean(repo)
    branch = BRANCH_PREFIX + tag
    if branch in [h.name for h in repo.heads]:
        raise UserError(f"loop start: branch {branch} already exists; choose another tag")
    from harness.optimize.state import LoopState

    if LoopState.locator(gitops.git_dir(repo), tag).exists():
        raise UserError(
            f"loop start: a loop tagged {tag} was started here before; choose another tag"
        )
    freeze(repo, tag, branch, overrides)


# ---- try ------------------------------------------------------------------------------------
def _as_judge(argv: list[str], judge_tree: Path) -> None:
    """Re-execute this command from the judge's worktree (the start commit's code), isolated:
    no module of the checkout it was started in can be imported (:mod:`.isolation`)."""
    from harness.optimize.isolation import isolated_command

    code = subprocess.call(isolated_command(judge_tree, "harness.optimize.loop", list(argv)))
    raise SystemExit(code)


def _as_judged(state: Any, argv: list[str]) -> None:
    """Go on only as the judge: in the start commit's worktree, isolated, that worktree intact."""
    from harness.optimize.isolation import require_tree, verify_checkout

    judge_tree = Path(state.frozen["judge_tree"]).resolve()
    here = Path(__file__).resolve().parents[2]
    if here != judge_tree:
        _as_judge(list(argv), judge_tree)
    require_tree(judge_tree)
    verify_checkout(judge_tree, state.base)


def try_head(tag: str | None, description: str, rest: list[str], neutral: bool = False) -> str:
    """Judge the committed HEAD; returns the status."""
    from harness.optimize import gitops
    from harness.optimize.state import LoopState

    repo = _repo()
    tag = tag or _tag_from_branch(repo)
    state = LoopState.load(gitops.git_dir(repo), tag)
    _as_judged(
        state,
        ["try", "-d", description, f"tag={tag}", *(["--neutral"] if neutral else []), *rest],
    )
    if repo.head.is_detached or repo.active_branch.name != state.branch:
        raise UserError(f"loop try: check out {state.branch} first")
    gitops.require_clean(repo)
    _audit_kept(repo, state)
    head = repo.head.commit.hexsha
    if head == state.kept:
        raise UserError("loop try: HEAD is the last kept commit; commit your change first")
    if not description:
        raise UserError('loop try: describe the change in one line: -d "..."')
    if rest:
        _refuse(repo, state, description, rest)
    from harness.optimize.attempt import Attempt

    attempt = Attempt(repo, state, description, neutral=neutral)
    status = attempt.run()
    entry = attempt.summary()
    entry["time_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    state.attempts.append(entry)
    if status in ("keep", "keep-neutral"):
        state.kept = head
    state.save()
    line = f"loop {tag}: {status.upper()} {head[:12]} verdict {entry['verdict'] or '-'} - {attempt.reason}"
    line += f" [{attempt.session.breakdown()}]"  # where the time went, re-runs included
    print(line, flush=True)
    return status


def _audit_kept(repo: Any, state: Any) -> None:
    """The last kept commit differs from the base in editable files only: a 'keep' that this
    judge did not make (a candidate's own entry point, an edited state file) is refused."""
    from harness.optimize import gitops, surface

    files = gitops.changed_files(repo, state.base, state.kept)
    outside = surface.outside_surface(
        files, state.frozen["editable"], state.frozen.get("tuned_file")
    )
    if outside:
        raise UserError(
            f"loop try: the last kept commit {state.kept[:12]} changes files outside the "
            f"editable surface ({', '.join(outside[:3])}): this loop's judge did not keep it; "
            "start a new loop from a commit you trust"
        )


def _refuse(repo: Any, state: Any, description: str, rest: list[str]) -> None:
    """An override on ``try`` would change the task or the gate: record the candidate as
    rejected, save its diff, reset the branch, and stop with one line."""
    from harness.optimize.attempt import Attempt

    reason = (
        f"try takes no overrides ({' '.join(rest)[:120]}): the task and the judgement are "
        "frozen at start"
    )
    attempt = Attempt(repo, state, description)
    attempt.status, attempt.reason, attempt.verdict = "rejected", reason, ""
    attempt._record()
    attempt._revert()
    entry = attempt.summary()
    state.attempts.append(entry)
    state.save()
    raise UserError(f"loop try: {reason}; the candidate was rejected and reverted")


# ---- status ---------------------------------------------------------------------------------
def status(tag: str | None, measure: bool = False) -> None:
    """Attempts with their gains and intervals; ``--measure`` times base vs kept directly."""
    from harness.optimize import gitops
    from harness.optimize.state import LoopState

    repo = _repo()
    tag = tag or _tag_from_branch(repo)
    state = LoopState.load(gitops.git_dir(repo), tag)
    _as_judged(state, ["status", f"tag={tag}", *(["--measure"] if measure else [])])
    print(f"loop {tag}  branch {state.branch}  base {state.base[:12]}  kept {state.kept[:12]}")
    print(
        f"{'#':>3}  {'status':12} {'commit':9} {'verdict':8} {'gain [interval]':>26} {'pairs':>5} "
        f"{'s':>5}  description | reason"
    )
    estimate = 1.0
    for a in state.attempts:
        gain = a.get("gain")
        interval = (
            f"{gain:+.1%} [{a['gain_lo']:+.1%}, {a['gain_hi']:+.1%}]" if gain is not None else "-"
        )
        if a["status"] == "keep" and gain is not None:
            estimate /= 1 - gain
        print(
            f"{a['n']:>3}  {a['status']:12} {a['commit'][:9]} {a.get('verdict') or '-':8} "
            f"{interval:>26} {a.get('pairs', 0):>5} {a.get('seconds', 0):>5.0f}  "
            f"{a['description']} | {a['reason']}"
        )
    n = len(state.attempts)
    kept = sum(a["status"] in ("keep", "keep-neutral") for a in state.attempts)
    print(
        f"{n} attempts, {kept} kept; speedup over base: estimate {estimate:.3f}x (the product of "
        "the kept attempts' gains; `loop status --measure` measures it)"
    )
    from harness.optimize.lifecycle import keeper_lines

    print("\n".join(keeper_lines(Path(state.frozen["results"]), tag)))
    if measure:
        from harness.optimize.compare import main as compare_main

        print(f"measuring base {state.base[:12]} vs kept {state.kept[:12]} ...", flush=True)
        compare_main([state.base, state.kept, f"tag={tag}"])


def run(argv: list[str]) -> None:
    """Dispatch a subcommand."""
    command, opts, rest = parse_args(argv)
    if command == "start":
        start(opts.get("tag", ""), rest)
    elif command == "try":
        try_head(opts.get("tag"), opts.get("description", ""), rest, opts.get("neutral", False))
    elif command in ("stop", "drop"):
        from harness.optimize import lifecycle

        if rest:
            raise UserError(f"loop {command}: unknown arguments {rest}; {USAGE}")
        repo = _repo()
        if command == "drop":
            lifecycle.drop(repo, lifecycle.require_tag(opts.get("tag", "")))
        else:
            lifecycle.stop(repo, opts.get("tag") or _tag_from_branch(repo))
    else:
        if rest:
            raise UserError(f"loop status: unknown arguments {rest}; {USAGE}")
        status(opts.get("tag"), opts.get("measure", False))


def main(argv: list[str] | None = None) -> int:
    return report_user_errors(lambda: run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
