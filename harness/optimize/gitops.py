"""The git operations of the optimization loop (GitPython), each refusing unsafe states."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError


def repo_at(path: Path):  # -> git.Repo
    """The repository containing ``path``; a UserError outside git."""
    import git

    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UserError(f"{path}: not inside a git repository") from None


def require_clean(repo) -> None:
    """Refuse uncommitted or untracked (non-ignored) work: the loop never touches it."""
    if repo.is_dirty(untracked_files=True):
        changed = [d.a_path for d in repo.index.diff(None)] + repo.untracked_files
        changed += [d.a_path for d in repo.index.diff("HEAD")]
        listing = ", ".join(sorted(set(changed))[:5])
        raise UserError(f"working tree has uncommitted changes ({listing}); commit or stash them")


def changed_files(repo, base: str, head: str = "HEAD") -> list[str]:
    """Paths changed between two commits (renames count both sides)."""
    out = repo.git.diff("--name-status", "--no-renames", f"{base}..{head}")
    return sorted({line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line})


def save_patch(repo, base: str, head: str, path: Path) -> Path:
    """Save commits ``base..head`` as a mailbox patch (``git am`` can re-apply it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(repo.git.format_patch(f"{base}..{head}", "--stdout") + "\n")
    return path


def reset_to(repo, commit: str) -> None:
    """Move the current branch back to ``commit`` (only after require_clean passed)."""
    require_clean(repo)
    repo.git.reset("--hard", commit)


def worktree_at(repo, path: Path, commit: str) -> Path:
    """A detached worktree of ``commit`` at ``path`` (created or moved to the commit)."""
    if (path / ".git").exists():
        repo.git.execute(["git", "-C", str(path), "checkout", "--quiet", "--detach", commit])
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        repo.git.worktree("prune")
        repo.git.worktree("add", "--quiet", "--detach", str(path), commit)
    return path


def git_dir(repo) -> Path:
    """The repository's common git directory (shared by its worktrees)."""
    return Path(repo.common_dir).resolve()


def show(repo, commit: str, path: str) -> str | None:
    """The text of ``path`` at ``commit`` (None when it does not exist there)."""
    import git

    try:
        return repo.git.show(f"{commit}:{path}")
    except git.GitCommandError:
        return None
