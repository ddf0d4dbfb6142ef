"""The judge's isolation, piece by piece (the whole is proven through the real ``loop try`` in
``test_loop_redteam.py``): the isolated command imports only its tree, compiled from source;
``require_tree`` refuses foreign project modules; ``verify_checkout`` refuses an edited tree."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.optimize.isolation import isolated_command, verify_checkout
from tests.loop.loop_repo import LoopRepo

REPO = Path(__file__).resolve().parents[2]
PROBE = "import harness, methods; print(harness.__file__); print(methods.__file__)"


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_isolated_command_imports_only_its_tree(tmp_path):
    """Started in another checkout, with that checkout on PYTHONPATH (as an editable install
    of it would put it): the project modules still come from the given tree."""
    tree = LoopRepo(tmp_path / "judge")
    (tree.root / "probe_iso.py").write_text(PROBE)
    other = LoopRepo(tmp_path / "candidate")
    cmd = isolated_command(tree.root, "probe_iso")
    proc = _run(cmd, cwd=other.root, PYTHONPATH=str(other.root))
    assert proc.returncode == 0, proc.stderr
    harness_file, methods_file = proc.stdout.split()
    assert Path(harness_file).is_relative_to(tree.root)
    assert Path(methods_file).is_relative_to(tree.root)


def test_require_tree_refuses_foreign_project_modules(tmp_path):
    other = LoopRepo(tmp_path / "candidate")
    check = f"from harness.optimize.isolation import require_tree; require_tree({str(REPO)!r})"
    proc = _run([sys.executable, "-c", check], cwd=other.root, PYTHONPATH=str(other.root))
    assert proc.returncode == 2 and "must run only" in proc.stderr


def test_verify_checkout_refuses_an_edited_or_extended_tree(tmp_path):
    repo = LoopRepo(tmp_path)
    head = repo.head()
    verify_checkout(repo.root, head)
    decide = repo.root / "harness" / "optimize" / "decide.py"
    decide.write_text(decide.read_text() + "\n# edited\n")
    with pytest.raises(UserError, match="differs from the start commit"):
        verify_checkout(repo.root, head)
    repo.git("checkout", "--", "harness/optimize/decide.py")
    (repo.root / "harness" / "optimize" / "extra.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="extra.py"):
        verify_checkout(repo.root, head)


def test_planted_bytecode_is_not_loaded(tmp_path):
    """A .pyc with the source's mtime and size (all Python checks) is ignored: the tree's
    modules are compiled from their source files."""
    repo = LoopRepo(tmp_path)
    src = repo.root / "harness" / "core" / "fsio.py"
    stat = src.stat()
    code = compile("PLANTED = True\n", str(src), "exec")
    pyc = Path(importlib.util.cache_from_source(str(src)))
    pyc.parent.mkdir(exist_ok=True)
    from importlib._bootstrap_external import _code_to_timestamp_pyc

    pyc.write_bytes(_code_to_timestamp_pyc(code, int(stat.st_mtime), stat.st_size))
    (repo.root / "probe_iso.py").write_text(
        "import harness.core.fsio as m; print(hasattr(m, 'PLANTED'))"
    )
    plain = _run([sys.executable, "-m", "probe_iso"], cwd=repo.root, PYTHONPATH=str(repo.root))
    assert plain.stdout.strip() == "True"  # what an ordinary interpreter does
    booted = _run(isolated_command(repo.root, "probe_iso"), cwd=repo.root)
    assert booted.returncode == 0, booted.stderr
    assert booted.stdout.strip() == "False"
