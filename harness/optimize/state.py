"""Persistent state of an optimization loop: ``<results>/loop/<tag>.json`` (atomic writes).

Everything that defines the task and the judgement is frozen at ``start`` (``frozen``): the
overrides, the method's surfaces, ``correctness.accept``, the resolved config (tolerances
included), the held-out check input, the decision rule, the packages candidates may import, and
the digests of the loop's own baselines. A digest of the frozen block is also written inside
the git directory (not in the working tree, so no commit can change it); ``load`` verifies it
and the baselines, so the rules a candidate is judged by are the rules the loop started with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.core.fsio import atomic_write


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _digest(frozen: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(frozen, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class LoopState:
    tag: str
    branch: str
    base: str  # the commit the loop started from (the baseline)
    kept: str  # the last kept commit: candidates are measured against it
    overrides: list[str]  # the task's overrides, frozen at start
    frozen: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    # ---- where -------------------------------------------------------------------------
    @staticmethod
    def path(results: Path, tag: str) -> Path:
        return results / "loop" / f"{tag}.json"

    @staticmethod
    def locator(git_dir: Path, tag: str) -> Path:
        """The loop's anchor inside the git directory: results dir and the frozen digest."""
        return Path(git_dir) / "harness-loop" / f"{tag}.json"

    @property
    def dir(self) -> Path:
        return Path(self.frozen["results"]) / "loop" / self.tag

    @property
    def baseline_path(self) -> Path:
        return self.dir / "baseline.npz"

    @property
    def check_path(self) -> Path:
        return self.dir / "check.npz"

    # ---- io ----------------------------------------------------------------------------
    @classmethod
    def results_for(cls, git_dir: Path, tag: str) -> Path:
        loc = cls.locator(git_dir, tag)
        if not loc.exists():
            raise UserError(f"loop tag={tag}: no loop started here; run 'start tag={tag}' first")
        return Path(json.loads(loc.read_text())["results"])

    @classmethod
    def load(cls, git_dir: Path, tag: str) -> LoopState:
        """The state, verified against the digest in the git directory and its baselines."""
        results = cls.results_for(git_dir, tag)
        path = cls.path(results, tag)
        if not path.exists():
            raise UserError(f"loop tag={tag}: no loop state at {path}")
        state = cls(**json.loads(path.read_text()))
        anchor = json.loads(cls.locator(git_dir, tag).read_text())
        if anchor.get("frozen_sha") != _digest(state.frozen):
            raise UserError(
                f"loop tag={tag}: {path} does not match the rules frozen at start (edited?)"
            )
        for name, digest in state.frozen.get("baselines", {}).items():
            file = state.dir / name
            if not file.exists() or sha256_file(file) != digest:
                raise UserError(f"loop tag={tag}: the loop's baseline {file} is missing or changed")
        return state

    def save(self, git_dir: Path | None = None) -> None:
        """Write the state; with ``git_dir`` (at start) also the anchor with the digest."""
        results = Path(self.frozen["results"])
        atomic_write(self.path(results, self.tag), json.dumps(asdict(self), indent=1))
        if git_dir is not None:
            anchor = {"results": str(results), "frozen_sha": _digest(self.frozen)}
            atomic_write(self.locator(git_dir, self.tag), json.dumps(anchor, indent=1))
