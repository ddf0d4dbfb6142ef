"""results.tsv: one row per benchmark, appended atomically under an exclusive lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import UserError

COLUMNS: tuple[str, ...] = (
    "timestamp",
    "commit",
    "branch",
    "dirty",
    "method",
    "dataset",
    "hardware",
    "device",
    "elapsed_s",
    "elapsed_min",
    "elapsed_iqr",
    "n_runs",
    "warmup_s",
    "peak_mem_mb",
    "weights_hash",
    "verdict",
    "status",
    "tag",
    "description",
    "overrides",
    "mlflow_run_id",
)
HEADER = "\t".join(COLUMNS) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def format_row(row: Mapping[str, Any]) -> str:
    """One TSV line (with newline) in column order; unknown keys are an error."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown results.tsv columns: {sorted(unknown)}")
    return "\t".join(_cell(row.get(c)) for c in COLUMNS) + "\n"


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Append ``row`` to ``path``: header if the file is new, one ``write`` under ``flock``.

    Concurrent writers (multirun jobs, SLURM array tasks on a shared filesystem with lock
    support) never interleave or lose rows. An existing file with another header is refused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = format_row(row).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size == 0:
            payload = HEADER.encode() + line
        else:
            first = os.pread(fd, len(HEADER) + 1, 0).decode(errors="replace")
            if not first.startswith(HEADER):
                raise UserError(
                    f"{path}: header differs from this harness's columns; move the file aside"
                )
            payload = line
        written = os.write(fd, payload)
        if written != len(payload):  # pragma: no cover - disk full
            raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows as dicts (empty list when the file does not exist)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]
