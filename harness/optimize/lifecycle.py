"""``loop stop`` and ``loop drop``: end a loop's processes, or set a loop aside for a restart.

``stop`` ends the loop's keeper and the warm workers it holds (nothing else of a loop outlives
a ``try``: candidate workers die with their judge). ``drop`` also sets the loop aside so that
``start`` can use its tag again: the keeper is stopped, the judge's worktrees are removed, the
branch is renamed ``autoresearch/<tag>-dropped-<UTC time>`` (its commits stay reachable) and
the loop's state and files are moved beside it under the same name. Nothing is deleted.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.core.errors import UserError


def _socket(results: Path, tag: str) -> Path:
    return results / "loop" / tag / "keeper.sock"


def keeper_lines(results: Path, tag: str) -> list[str]:
    """What ``status`` shows of the loop's keeper: its warm workers and their memory."""
    from harness.optimize.keeper import query

    listing = query(_socket(results, tag))
    if listing is None:
        return ["keeper: not running (the next try starts one)"]
    workers = listing["workers"]
    rss = sum(w["rss"] for w in workers) / 2**20
    lines = [
        f"keeper: pid {listing['pid']}, kept {listing['kept'][:12]}, {len(workers)} warm "
        f"worker(s), {rss:.0f} MB of {listing['host_budget'] / 2**20:.0f} MB "
        f"(closed to fit so far: {listing['evicted']}); `python -m harness.loop stop` ends it"
    ]
    for w in workers:
        device = f", device {w['device'] / 2**20:.0f} MB" if w["device"] else ""
        lines.append(
            f"  slot {w['slot']}: pid {w['pid']}, {w['rss'] / 2**20:.0f} MB{device}, "
            f"idle {w['idle_s']:.0f} s"
        )
    return lines


def stop(repo: Any, tag: str) -> None:
    """End the loop's keeper and its warm workers; kill and remove the worker cgroups of
    judges that are gone (:mod:`.cgroup`)."""
    from harness.optimize import cgroup, gitops
    from harness.optimize.keeper import shutdown
    from harness.optimize.state import LoopState

    results = LoopState.results_for(gitops.git_dir(repo), tag)
    ended = shutdown(_socket(results, tag))
    print(f"loop {tag}: " + ("keeper and its workers stopped" if ended else "nothing running"))
    swept = cgroup.sweep()
    if swept:
        print(f"loop {tag}: removed {swept} worker cgroup(s) left by judges that are gone")


def drop(repo: Any, tag: str) -> None:
    """Set the loop aside (module doc) so that ``start tag=<tag>`` can begin again."""
    from harness.optimize import gitops
    from harness.optimize.keeper import shutdown
    from harness.optimize.loop import BRANCH_PREFIX
    from harness.optimize.state import LoopState

    git_dir = gitops.git_dir(repo)
    locator = LoopState.locator(git_dir, tag)
    results = LoopState.results_for(git_dir, tag)
    shutdown(_socket(results, tag))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{tag}-dropped-{stamp}"
    branch = BRANCH_PREFIX + tag
    for suffix in ("judge", "kept"):
        tree = results / "worktrees" / f"{tag}-{suffix}"
        if (tree / ".git").exists():
            repo.git.worktree("remove", "--force", str(tree))
    if branch in [h.name for h in repo.heads]:
        repo.git.branch("-m", branch, BRANCH_PREFIX + aside)
    loop_dir, attempts = results / "loop", results / "attempts"
    for old, new in (
        (loop_dir / tag, loop_dir / aside),
        (loop_dir / f"{tag}.json", loop_dir / f"{aside}.json"),
        (attempts / tag, attempts / aside),  # else a restart's attempt numbers collide
    ):
        if old.exists():
            shutil.move(str(old), str(new))
    anchor = json.loads(locator.read_text())
    locator.with_name(f"{aside}.json").write_text(json.dumps(anchor, indent=1))
    locator.unlink()
    print(
        f"loop {tag}: dropped; branch and files set aside as {BRANCH_PREFIX}{aside} and "
        f"{loop_dir / aside}; `python -m harness.loop start tag={tag}` starts it again "
        "(from the commit checked out then)"
    )


def require_tag(tag: str) -> str:
    if not tag or "/" in tag or " " in tag:
        raise UserError("loop: tag=<name> is required (no spaces or slashes)")
    return tag
