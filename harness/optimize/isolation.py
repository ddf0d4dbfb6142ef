"""The judge's isolation: processes that run one tree's code and nothing else.

The loop's judge must run the start commit's code whatever the candidate commit contains. A
plain ``python -m harness...`` started in the candidate checkout would not: ``-m`` puts the
working directory first on ``sys.path``, and an editable install resolves ``harness`` to the
checkout too. So the judge (and every helper process it starts) is
``python -I -c <boot> <tree> <module> ...``: isolated mode ignores ``PYTHON*`` variables and
the user's site directory and prepends nothing; the boot code puts ``<tree>`` first on the path
(before site-packages, so before any editable-install finder), checks with
:func:`require_tree` that ``harness`` and ``methods`` really come from it, and runs the module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.core.errors import UserError

# Self-contained (``harness.compare`` starts workers inside old commits without this module).
# The tree's modules are compiled from their source files, never loaded from ``__pycache__``: a
# candidate's process can write a .pyc there (with the source's mtime and size, which is all
# Python checks) and so change what the judge runs without changing a tracked file.
_BOOT = """
import os, runpy, sys
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader
tree, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
root = os.path.realpath(tree)
sys.dont_write_bytecode = True

class SourceOnly(SourceFileLoader):
    def get_code(self, fullname):
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)

def source_only(path):
    real = os.path.realpath(path or ".")
    if real == root or real.startswith(root + os.sep):
        return FileFinder(path, (SourceOnly, SOURCE_SUFFIXES))
    raise ImportError

sys.path_hooks.insert(0, source_only)
sys.path_importer_cache.clear()
sys.path.insert(0, tree)
import harness
here = os.path.realpath(harness.__file__ or "")
if os.path.commonpath([here, root]) != root:
    sys.exit(f"error: harness imported from {here}, not from {tree}")
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
PROJECT_PACKAGES = ("harness", "methods")


def isolated_command(tree: Path, module: str, args: list[str] = ()) -> list[str]:
    """The command running ``python -m module args`` with only ``tree``'s project code,
    compiled from its source files."""
    return [sys.executable, "-I", "-c", _BOOT, str(Path(tree).resolve()), module, *args]


def foreign_modules(tree: Path) -> list[str]:
    """Project modules (``harness.*``, ``methods.*``) loaded from anywhere but ``tree``."""
    root = Path(tree).resolve()
    bad = []
    for name, module in list(sys.modules.items()):
        if name.split(".", 1)[0] not in PROJECT_PACKAGES:
            continue
        files = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])]
        for file in filter(None, files):
            if not Path(file).resolve().is_relative_to(root):
                bad.append(f"{name} from {file}")
                break
    return bad


def require_tree(tree: str | Path) -> None:
    """Refuse to go on unless ``harness`` and ``methods`` — and every project module loaded so
    far — come from ``tree`` (exit 2 with one line: the judge must not run foreign code)."""
    import importlib

    packages = [importlib.import_module(name) for name in PROJECT_PACKAGES]
    bad = foreign_modules(Path(tree))
    for package in packages:
        if package.__file__ is None:
            bad.append(f"{package.__name__} is a namespace package (no __init__.py in {tree})")
    if bad:
        print(
            f"error: the judge must run only {tree}'s code, but loaded {bad[0]}"
            + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""),
            file=sys.stderr,
        )
        raise SystemExit(2)


def verify_checkout(tree: Path, commit: str) -> None:
    """The judge's worktree holds exactly ``commit``'s files (nothing edited, nothing added)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False
        )

    changed = git("diff", "--name-only", commit, "--")
    extra = git("ls-files", "--others", "--", *PROJECT_PACKAGES)
    if changed.returncode != 0:
        raise UserError(f"loop: the judge's worktree {tree} is unusable ({changed.stderr.strip()})")
    files = [*changed.stdout.split(), *(f for f in extra.stdout.split() if f.endswith(".py"))]
    if files:
        raise UserError(
            f"loop: the judge's worktree {tree} differs from the start commit ({', '.join(files[:3])}); "
            "the loop cannot be judged — start a new one"
        )


_LAUNCHER = """#!/usr/bin/env python3
\"\"\"The judge of loop {tag}: ``python -m harness.loop`` run from the start commit's worktree,
isolated: nothing of the checkout it is started in is imported, and the worktree's modules are
compiled from source. Written by ``loop start``.\"\"\"
import os
import sys

TREE = {tree!r}
BOOT = {boot!r}
os.execv(
    sys.executable,
    [sys.executable, "-I", "-c", BOOT, TREE, "harness.optimize.loop", *sys.argv[1:]],
)
"""


def write_launcher(path: Path, tree: Path, tag: str) -> Path:
    """The loop's judge entry point outside the candidate's tree (``python <path> try ...``)."""
    from harness.core.fsio import atomic_write

    text = _LAUNCHER.format(tree=str(Path(tree).resolve()), tag=tag, boot=_BOOT)
    atomic_write(path, text)
    path.chmod(0o755)
    return path
