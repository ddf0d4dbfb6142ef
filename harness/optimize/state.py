"""Persistent state of an optimization loop: ``<results>/loop/<tag>.json`` (atomic writes)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.core.fsio import atomic_write


@dataclass
class LoopState:
    tag: str
    branch: str
    base: str  # the commit the loop started from (the baseline)
    kept: str  # the last kept commit: candidates are measured against it
    overrides: list[str]
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def path(results: Path, tag: str) -> Path:
        return results / "loop" / f"{tag}.json"

    @classmethod
    def load(cls, results: Path, tag: str) -> LoopState:
        path = cls.path(results, tag)
        if not path.exists():
            raise UserError(f"loop tag={tag}: no loop state at {path}; run 'start tag={tag}' first")
        return cls(**json.loads(path.read_text()))

    def save(self, results: Path) -> None:
        atomic_write(self.path(results, self.tag), json.dumps(asdict(self), indent=1))
