"""Environment fingerprint recorded with every run: code, software, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from harness.bench.runtime import Runtime


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_root() -> Path:
    """The checkout the ``harness`` package (and ``methods``) was imported from."""
    return Path(__file__).resolve().parents[2]


def code_version(files: list[str], root: Path | None = None) -> str:
    """16 hex chars over the contents of ``files`` (paths relative to the code root; a
    missing file counts as empty): the version of a method's code, which keys checkpoints."""
    import hashlib

    root = root or code_root()
    digest = hashlib.sha256()
    for rel in sorted(set(files)):
        path = root / rel
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def code_dir(cwd: Path) -> Path:
    """The repository whose code runs: ``cwd`` if it is inside a git work tree, else the
    checkout the ``harness`` package was imported from."""
    if _git(["rev-parse", "--is-inside-work-tree"], cwd) == "true":
        return cwd
    return code_root()


def git_state(cwd: Path) -> dict[str, Any]:
    """Commit, branch and dirty flag of the code's repository (empty fields outside git).

    Untracked files under git-ignored paths (results/) do not make the tree dirty.
    """
    cwd = code_dir(cwd)
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"commit": "", "branch": "", "dirty": False}
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd) or ""
    status = _git(["status", "--porcelain", "--untracked-files=normal"], cwd)
    return {"commit": commit, "branch": branch, "dirty": bool(status)}


def cpu_model() -> str:
    """The CPU model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def fingerprint(runtime: Runtime, cwd: Path) -> dict[str, Any]:
    """Everything needed to tell two runs' environments apart."""
    import numpy as np

    info: dict[str, Any] = {
        **git_state(cwd),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "",
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", ""),
        **dict(runtime.pools),
        "device": str(runtime.device),
        "dtype": str(runtime.dtype).removeprefix("torch."),
        "compile": runtime.compile,
        "tf32": runtime.tf32,
        "executable": sys.executable,
    }
    if runtime.is_cuda:
        props = torch.cuda.get_device_properties(runtime.device)
        info.update(
            device_name=props.name,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            driver=_nvidia_driver(),
        )
    else:
        info["device_name"] = info["cpu_model"]
    return info


def environment_key(info: dict[str, Any]) -> str:
    """The part of the fingerprint that can change output bytes (keys baselines)."""
    parts = (info["torch"], info["numpy"], info["device_name"], info["cuda"])
    return "|".join(str(p) for p in parts)
