"""``--help`` works on every entry point: usage on stdout, exit 0, nothing run or written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
COMMANDS = [
    ["harness", "--help"],
    ["harness", "list", "--help"],
    ["harness.report", "--help"],
    ["harness.tune", "--help"],
    ["harness.tune", "method=scvi", "-h"],
    ["harness.loop", "--help"],
    ["harness.loop", "status", "--help"],
    ["harness.compare", "--help"],
    ["harness.worker", "--help"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help(tmp_path: Path, argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "error" not in proc.stdout.lower().split("\n", 1)[0]
    first = proc.stdout.lstrip().splitlines()[0].lower()
    assert first.startswith(("usage: python -m", "harness:")), proc.stdout[:300]
    assert argv[0].split(".")[-1] in proc.stdout
    assert list(tmp_path.iterdir()) == []  # nothing run, nothing written
