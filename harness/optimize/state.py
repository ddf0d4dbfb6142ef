"""Persistent state of an optimization loop: ``<results>/loop/<tag>.json`` (atomic writes)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import UserError


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
        path = self.path(results, self.tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=1)
        os.replace(tmp, path)
