"""A throw-away git repository holding the harness plus the toy method, for loop tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "loop_fixture"

# fast, quiet settings for every loop command (frozen at start: try takes no overrides)
TOY = [
    "method=toy",
    "dataset=cells/toy",
    "hardware=cpu",
    "bench.repeats=2",
    "bench.timeout_s=20",
    "tracking.mlflow=false",
    "loop.rounds=3",
    "loop.min_pairs=2",
    "loop.max_pairs=3",
    "loop.pair_sd=0.005",  # the toy sleeps: its timings are precise
    "loop.max_slowdown=0.25",  # ... but for scheduling jitter on 30 ms runs under load
]


class LoopRepo:
    """Copies harness/, conf/ and the toy method into ``root`` and commits them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("harness", "conf", "methods"):
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        shutil.copytree(FIXTURE, root, dirs_exist_ok=True)
        (root / ".gitignore").write_text("results/\n__pycache__/\n")
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.commit("initial")

    def git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        out = subprocess.run(
            ["git", *args], cwd=self.root, env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def commit(self, message: str) -> str:
        self.git("commit", "-q", "-am" if self.git("ls-files") else "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def write(self, rel: str, text: str, message: str) -> str:
        """Replace a file's text and commit it."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.git("add", rel)
        return self.commit(message)

    def set_knob(self, name: str, value: str, message: str) -> str:
        path = self.root / "methods" / "toy" / "knobs.py"
        lines = [
            f"{name} = {value}" if line.startswith(f"{name} =") else line
            for line in path.read_text().splitlines()
        ]
        path.write_text("\n".join(lines) + "\n")
        return self.commit(message)

    def loop(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        cmd = [sys.executable, "-m", "harness.loop", *args]
        return subprocess.run(
            cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout
        )
