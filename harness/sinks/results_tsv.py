"""results.tsv: one row per benchmark, appended atomically under an exclusive lock.

A file written by an older harness (a known earlier header) is migrated once, under the same
lock, to the current columns (new columns empty, ``weights_hash`` renamed ``output_hash``;
``quality``: the method's headline metric as ``name=value``);
rows are never lost or reordered. A file with an unknown header is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.core.fsio import atomic_write, locked

COLUMNS: tuple[str, ...] = (
    "timestamp",
    "commit",
    "branch",
    "dirty",
    "method",
    "dataset",
    "hardware",
    "device",
    "timing",
    "elapsed_s",
    "elapsed_min",
    "elapsed_iqr",
    "n_runs",
    "warmup_s",
    "peak_mem_mb",
    "output_hash",
    "verdict",
    "quality",
    "status",
    "resumed",
    "tag",
    "description",
    "overrides",
    "mlflow_run_id",
)
HEADER = "\t".join(COLUMNS) + "\n"
# earlier headers this harness migrates (old column name -> new column name)
_V1 = [
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
]
_V2 = [c for c in COLUMNS if c != "quality"]  # before the headline quality column
_RENAMED = {"weights_hash": "output_hash"}


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


def _migrate(path: Path, text: str) -> None:
    """Rewrite an older file with the current columns (called under the lock)."""
    lines = text.splitlines()
    old = lines[0].split("\t")
    rows = [dict(zip(old, line.split("\t"), strict=True)) for line in lines[1:] if line]
    rows = [{_RENAMED.get(k, k): v for k, v in r.items()} for r in rows]
    atomic_write(path, HEADER + "".join(format_row(r) for r in rows))


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Append ``row`` to ``path``: header if the file is new, one ``write`` under ``flock``.

    Concurrent writers (multirun jobs, SLURM array tasks on a shared filesystem with lock
    support) never interleave or lose rows. The lock is taken on a sibling ``.lock`` file so a
    migration (an atomic rename of the file) stays under it.
    """
    path = Path(path)
    line = format_row(row).encode()
    with locked(path.with_name(path.name + ".lock")):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            payload = line
            if size == 0:
                payload = HEADER.encode() + line
            else:
                first = os.pread(fd, 4096, 0).decode(errors="replace").split("\n", 1)[0]
                if first.split("\t") in (_V1, _V2):
                    os.close(fd)
                    _migrate(path, path.read_text())
                    fd = os.open(path, os.O_RDWR | os.O_APPEND, 0o644)
                elif first + "\n" != HEADER:
                    raise UserError(
                        f"{path}: header differs from this harness's columns; move the file aside"
                    )
            written = os.write(fd, payload)
            if written != len(payload):  # pragma: no cover - disk full
                raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows as dicts (empty list when the file does not exist); v1 files read as v2."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    header = [_RENAMED.get(c, c) for c in lines[0].split("\t")]
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line]
    return [{c: r.get(c, "") for c in COLUMNS} for r in rows]
