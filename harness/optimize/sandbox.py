"""An OS sandbox for the loop's workers: the files the judge trusts are read-only to them.

A candidate's worker runs arbitrary Python; nothing in the process stops it from writing files
the judge reads later — the judge's worktree, the kept worktree (so the next kept worker runs
slower code), the loop's state and launcher, site-packages (numpy, torch), the git directory.
Where this machine allows it (root, util-linux ``unshare``), every worker starts in its own
mount namespace in which those paths are bind-mounted read-only: the Python installation and
the repository (its checkouts, results and ``.git`` included), with only the directories a
worker must write — the attempt's scratch and logs, the method cache — mounted writable again.
Elsewhere the prefix is empty and :func:`sandbox_note` says why.
"""

from __future__ import annotations

import os
import shlex
import shutil
import site
import sys
from collections.abc import Iterable
from pathlib import Path


def available() -> str:
    """'' when workers can be sandboxed here, else why not."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root (a mount namespace needs CAP_SYS_ADMIN)"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "util-linux unshare/mount not installed"
    return ""


def python_paths() -> list[Path]:
    """The interpreter's installation: prefixes and site-packages (editable finders included)."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), *map(Path, site.getsitepackages())}
    user = site.getusersitepackages()
    if user and Path(user).exists():
        paths.add(Path(user))
    return sorted(p.resolve() for p in paths if p.exists())


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Drop paths inside another listed path (one bind mount covers them)."""
    out: list[Path] = []
    for p in sorted({Path(p).resolve() for p in paths}, key=lambda p: len(p.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


def prefix(readonly: Iterable[Path], writable: Iterable[Path]) -> tuple[str, ...]:
    """The command prefix that runs a worker with ``readonly`` bind-mounted read-only and the
    ``writable`` directories inside them writable again (empty where :func:`available` says
    no)."""
    if available():
        return ()
    steps = []
    for path in _outermost(p for p in readonly if Path(p).exists()):
        q = shlex.quote(str(path))
        steps.append(f"mount --bind {q} {q} && mount -o remount,bind,ro {q}")
    for path in sorted({Path(p).resolve() for p in writable}, key=lambda p: len(p.parts)):
        path.mkdir(parents=True, exist_ok=True)
        q = shlex.quote(str(path))
        steps.append(f"mount --bind {q} {q} && mount -o remount,bind,rw {q}")
    script = "set -e; " + "; ".join(steps) + '; exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sandbox")
