"""The GPU check pack's CPU path: ``python benchmarks/gpu_check.py --device cpu --tiny`` runs every
check at toy sizes, so the pack cannot rot between GPU slots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

METHODS = ("rctd", "scvi", "cellbender", "scbert", "cellwhisperer")
BF16 = {"scvi", "scbert", "cellwhisperer"}  # the methods declaring bf16 autocast


def _pack(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "benchmarks/gpu_check.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu")
    return _pack("--device", "cpu", "--tiny", "--out", str(out)), out


def _rows(out: Path, check: str) -> list[dict]:
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["device"] == "cpu" and data["tiny"] is True
    return [r for r in data["rows"] if r["check"] == check]


@pytest.mark.slow
def test_tiny_run_passes_and_writes_every_check(tiny):
    proc, out = tiny
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "gpu_check.md").read_text()
    assert md in proc.stdout  # the tables are printed too
    for title in ("1. Methods", "2. Device vs CPU", "3. Memory", "4. The judge", "5. scVI",
                  "6. RCTD vs rctd-py"):  # fmt: skip
        assert f"## {title}" in md
    data = json.loads((out / "gpu_check.json").read_text())
    assert {r["status"] for r in data["rows"]} <= {"ok", "warn", "info", "skip"}
    assert data["machine"]["device"] == "cpu"


@pytest.mark.slow
def test_every_method_on_the_device_reruns_stably(tiny):
    _, out = tiny
    rows = _rows(out, "methods")
    for m in METHODS:
        mine = {r["variant"].split(" (")[0]: r for r in rows if r["method"] == m}
        assert {"baseline", "rerun"} <= set(mine), m
        assert mine["baseline"]["verdict"] == "none"  # it is the baseline
        assert mine["rerun"]["stable"] is True and mine["rerun"]["verdict"] in ("exact", "close")
        assert ("bf16 autocast" in mine) == (m in BF16), m
        assert ("float32" in mine) == (m == "rctd"), m  # the only float64 default
    rctd = {r["variant"]: r for r in rows if r["method"] == "rctd"}
    assert rctd["rerun"]["hash"] == rctd["baseline (float64)"]["hash"]  # bitwise
    assert rctd["float32"]["verdict"] == "close"  # another precision, within the tolerance


@pytest.mark.slow
def test_device_vs_cpu_and_memory_and_loader(tiny):
    _, out = tiny
    agree = _rows(out, "device-vs-cpu")
    assert sorted(r["method"] for r in agree) == sorted(METHODS)
    # --device cpu: both sides run on the CPU, so the same input must give the same bytes
    assert all(r["verdict"] == "exact" and r["cpu_hash"] == r["device_hash"] for r in agree)
    auto, capped, cb = _rows(out, "memory")
    assert auto["batch"] == auto["pixels"] and capped["batch"] == auto["pixels"] // 4
    assert capped["same_hash"] is True and capped["hash"] == auto["hash"]
    assert cb["method"] == "cellbender" and cb["droplets"] > 0 and cb["batch"] >= 1
    loader = _rows(out, "loader")
    assert [r["workers"] for r in loader] == [0, 2]
    assert all(r["same_hash"] and r["cells_per_s"] > 0 for r in loader)


@pytest.mark.slow
def test_judge_finds_the_planted_slowdown(tiny):
    _, out = tiny
    aa, planted = _rows(out, "judge")
    assert aa["variant"] == "A/A" and aa["same_outputs"] is True and aa["pairs"] >= 1
    assert planted["exit"] == 1 and planted["speedup"] < 1, planted
    (peer,) = _rows(out, "peer")
    assert peer["status"] in ("ok", "skip") and peer["note"]
    # the compare's worktrees are gone, and the planted commit is on no branch
    listed = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True)
    assert str(out) not in listed.stdout
    refs = subprocess.run(["git", "log", "--all", "--format=%H", "--grep=^planted: RCTD solver"],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert refs.returncode == 0 and refs.stdout.strip() == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_no_cuda_is_one_line():
    proc = _pack("--out", "results/never", timeout=300)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: --device cuda: no CUDA device here")


def test_usage_errors_are_one_line():
    bad = _pack("--only", "methods,nope", timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: unknown check or method 'nope' (checks: methods, agree, memory, judge, loader, "
        "peer; methods: rctd, scvi, cellbender, scbert, cellwhisperer)"
    ]


def test_gpu_sizes_are_valid_configs():
    # the GPU sizes never run here: compose and validate each of them, so a typo in a key
    # fails now and not in a GPU slot
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpucheck.sizes import GPU

    from harness.config.compose import compose_checked

    runs = [[f"method={m}", *o] for sizes in (GPU.run, GPU.agree) for m, o in sizes.items()]
    runs += [["method=rctd", *GPU.rctd_memory, "method.batch_size=auto"],
             ["method=cellbender", *GPU.cellbender_memory], ["method=rctd", *GPU.judge],
             ["method=scvi", *GPU.loader, f"method.workers={max(GPU.loader_workers)}"],
             ["method=scvi", *GPU.run["scvi"], "method.autocast=bf16"]]  # fmt: skip
    for overrides in runs:
        compose_checked(["hardware=cpu", *overrides])
