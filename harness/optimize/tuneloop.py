"""Tuning on a loop branch: the task comes from the loop's frozen state, and the tuned
parameters are committed and judged by ``loop try`` like any other change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.core.errors import UserError


def loop_overrides(argv: list[str]) -> list[str]:
    """On an ``autoresearch/<tag>`` branch: the loop's frozen overrides plus the ``tune.*``
    options of ``argv`` (anything else would change the task: refused). Elsewhere: ``argv``."""
    from harness.optimize import gitops
    from harness.optimize.loop import BRANCH_PREFIX
    from harness.optimize.state import LoopState

    try:
        repo = gitops.repo_at(Path.cwd())
    except UserError:  # not in a git repository: no loop
        return argv
    if repo.head.is_detached or not repo.active_branch.name.startswith(BRANCH_PREFIX):
        return argv
    tag = repo.active_branch.name.removeprefix(BRANCH_PREFIX)
    state = LoopState.load(gitops.git_dir(repo), tag)
    other = [a for a in argv if not a.startswith("tune.")]
    if other:
        raise UserError(
            f"tune on loop branch {repo.active_branch.name}: the task is frozen by the loop; "
            f"only tune.* options are accepted (got {other[:3]})"
        )
    return [*state.overrides, *argv]


def commit_on_loop_branch(path: Path, description: str) -> None:
    """If HEAD is an ``autoresearch/<tag>`` branch, commit the tuned file and judge it with
    ``python -m harness.loop try`` (the judge adds ``+tuned/<method>=<hardware>`` to the
    workers of every commit that holds the file)."""
    from harness.optimize import gitops
    from harness.optimize.loop import BRANCH_PREFIX

    try:
        repo = gitops.repo_at(Path.cwd())
    except UserError:  # tuning outside a git repository: nothing to commit
        return
    if repo.head.is_detached or not repo.active_branch.name.startswith(BRANCH_PREFIX):
        return
    rel = str(path.resolve().relative_to(Path(repo.working_tree_dir).resolve()))
    others = [d.a_path for d in repo.index.diff(None)] + [d.a_path for d in repo.index.diff("HEAD")]
    others += [f for f in repo.untracked_files if f != rel]
    if [f for f in others if f != rel]:
        raise UserError("tune: the loop branch has other uncommitted changes; not committing")
    if rel not in repo.untracked_files and not repo.is_dirty(path=rel):
        print("tune: tuned parameters unchanged; nothing to commit")
        return
    repo.index.add([rel])
    repo.index.commit(f"tune: {description}")
    cmd = [sys.executable, "-m", "harness.loop", "try", "-d", description]
    subprocess.run(cmd, check=False)
