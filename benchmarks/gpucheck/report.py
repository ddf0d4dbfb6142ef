"""The pack's record: one markdown table per check (columns: the rows' figures) under a header
naming the machine, and the same rows as JSON (with each row's ``detail``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from gpucheck.common import FAIL, Row

TITLES = {
    "methods": "1. Methods on the device (baseline, rerun, variants judged against the baseline)",
    "device-vs-cpu": "2. Device vs CPU on the same input (CPU judged against the device)",
    "memory": "3. Memory models (measured peak vs predicted)",
    "judge": "4. The judge: harness.compare A/A and a planted slowdown (RCTD)",
    "loader": "5. scVI stream loader feeding training",
    "peer": "6. RCTD vs rctd-py",
}
MACHINE = ("device_name", "gpu_memory_gb", "driver", "cuda", "torch", "cpu_model", "cpu_count",
           "python", "commit", "dirty")  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def table(rows: Iterable[Row]) -> str:
    """A markdown table of rows of one check."""
    dicts = [r.as_dict() for r in rows]
    cols: list[str] = []
    for d in dicts:
        cols += [k for k in d if k not in cols and k not in ("check", "note", "detail")]
    cols.append("note")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(d.get(c)) for c in cols) + " |" for d in dicts]
    return "\n".join(lines)


def markdown(rows: list[Row], machine: dict[str, Any], meta: dict[str, Any]) -> str:
    """The whole report."""
    head = ", ".join(f"{k} {machine[k]}" for k in MACHINE if machine.get(k) not in (None, ""))
    failed = sum(r.status == FAIL for r in rows)
    parts = [
        f"# GPU check pack — device {meta['device']}, hardware={meta['hardware']}"
        + (" (tiny sizes)" if meta["tiny"] else ""),
        "",
        f"Machine: {head}.",
        f"Command: `{meta['command']}`; wall {meta['wall_s']:.0f} s; "
        f"{len(rows)} rows, {failed} failed.",
    ]
    for check, title in TITLES.items():
        mine = [r for r in rows if r.check == check]
        if mine:
            parts += ["", f"## {title}", "", table(mine)]
    return "\n".join(parts) + "\n"


def write_json(path: Any, rows: list[Row], machine: dict[str, Any], meta: dict[str, Any]) -> None:
    payload = {**meta, "machine": machine, "rows": [r.as_dict() for r in rows]}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
