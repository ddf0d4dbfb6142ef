"""Tuned parameters on a loop branch: commit them and let the loop's keep rule judge them."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError


def commit_on_loop_branch(
    path: Path, override: str, description: str, overrides: list[str]
) -> None:
    """If HEAD is an ``autoresearch/<tag>`` branch, commit ``path`` and run ``loop try`` on it
    with ``override`` for the candidate only; kept → the loop's overrides include it from now on."""
    from harness.optimize import gitops
    from harness.optimize.loop import BRANCH_PREFIX, try_head

    repo = gitops.repo_at(Path.cwd())
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
    try_head(None, description, overrides, candidate_extra=[override])
