"""The method contract, checked: every method in methods/ through a tiny CPU benchmark, the
test-only toy trainer through train timing, statistical determinism, a sparse output and a
SIGKILL → resume; the package layout (methods import only harness.api, no import cycles)."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO

FIXTURES = f"hydra.searchpath=[file://{REPO}/tests/fixtures/conf]"
TOY = [FIXTURES, "method=toytrain", "hardware=cpu", "tracking.mlflow=false"]
# the smallest sensible benchmark of each method (a method without an entry fails the test)
TINY = {
    "rctd": ["dataset.n_pixels=150", "dataset.n_genes=120", "dataset.n_types=3",
             "method.sigma_override=100", "bench.repeats=1"],
    "scvi": ["dataset.n_cells=300", "dataset.n_genes=60", "method.max_epochs=2",
             "bench.warmup_steps=2"],
    "cellbender": ["dataset.n_genes=80", "dataset.cells_per_type=40", "dataset.n_droplets=600",
                   "method.epochs=2", "bench.warmup_steps=2", "method.posterior_samples=4"],
    "scbert": ["dataset.n_genes=40", "dataset.cells_per_type=30", "dataset.novel_cells=10",
               "method.epochs_a=1", "method.epochs_b=1", "method.dim=16", "method.hidden1=32",
               "method.hidden2=16", "method.nb_features=16", "method.prune_target=0.1",
               "bench.warmup_steps=2"],
    "cellwhisperer": ["dataset.n_cells=300", "dataset.n_genes=60", "method.epochs=1",
                      "method.batch_size=32", "method.projection=64", "method.cell_hidden=32",
                      "method.text_hidden=32", "method.max_tokens=32", "bench.warmup_steps=2"],
}  # fmt: skip


def re_search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _harness(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _methods() -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("name", _methods())
def test_every_method_runs_through_the_contract(tmp_path: Path, name: str) -> None:
    assert name in TINY, f"add a tiny benchmark for method {name} to TINY"
    args = [f"method={name}", "hardware=cpu", "hardware.threads=1", "tracking.mlflow=false"]
    args += TINY[name]
    first = _harness(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    second = _harness(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    a, b = read_rows(tmp_path / "results" / "results.tsv")
    assert (a["status"], a["verdict"]) == ("baseline", "none")
    assert b["verdict"] in ("exact", "close") and a["method"] == name
    assert a["timing"] in ("repeat", "train") and float(b["elapsed_s"]) > 0


def test_every_role_yields_its_declared_data_keys() -> None:
    """Each shipped method's default dataset (at its TINY size) returns exactly the keys
    ROLE_KEYS (and the README) declare for its role; every role is covered."""
    from harness.config.compose import compose
    from harness.config.schema import ROLE_GROUPS, ROLE_KEYS
    from harness.config.validate import locate, validate_all

    assert set(ROLE_KEYS) == set(ROLE_GROUPS)
    seen = set()
    for name, tiny in TINY.items():
        valid = validate_all(compose([f"method={name}", *(a for a in tiny if "dataset." in a)]))
        data = locate(valid.dataset._target_, "dataset._target_")(valid.dataset)
        role = type(valid.dataset).ROLE
        assert tuple(sorted(data)) == tuple(sorted(ROLE_KEYS[role])), (name, role)
        seen.add(role)
    assert seen == set(ROLE_KEYS), f"no method covers role(s) {set(ROLE_KEYS) - seen}"


@pytest.mark.slow
def test_toy_trainer_train_timing_sparse_output_and_exact_rerun(tmp_path: Path) -> None:
    first = _harness(tmp_path, *TOY, "bench.warmup_steps=3")
    assert first.returncode == 0, first.stderr
    second = _harness(tmp_path, *TOY, "bench.warmup_steps=3")
    a, b = read_rows(tmp_path / "results" / "results.tsv")
    assert a["timing"] == "train" and int(a["n_runs"]) == 6  # one training, 6 epoch samples
    assert (
        "warmup 1/1" in first.stdout and "run 1/1" in first.stdout and "run 2/" not in first.stdout
    )
    assert (b["verdict"], b["output_hash"]) == ("exact", a["output_hash"])
    assert second.returncode == 0 and re_search(r"work_optimizer_steps\s+: 48\b", second.stdout)
    # the sparse outputs went into the baseline and came back as CSR
    from harness.bench.baseline import load

    (path,) = (tmp_path / "results" / "baselines").glob("toytrain-*/*.npz")
    stored = load(path)
    assert stored is not None and sp.issparse(stored.outputs["support"])
    assert stored.outputs["support"].shape == (1, 12)
    assert (stored.outputs["support"] != stored.outputs["support_t"]).nnz == 0
    assert stored.work["optimizer_steps"] == 48


@pytest.mark.slow
def test_statistical_determinism_is_judged_by_tolerance(tmp_path: Path) -> None:
    assert _harness(tmp_path, *TOY, "method.jitter=1e-5").returncode == 0
    noisy = _harness(tmp_path, *TOY, "method.jitter=1e-5")
    assert noisy.returncode == 0, noisy.stderr
    a, b = read_rows(tmp_path / "results" / "results.tsv")
    assert a["output_hash"] != b["output_hash"]  # the bytes differ run to run ...
    assert b["verdict"] == "close"  # ... the tolerance accepts them (not "nondeterministic")
    fewer = _harness(tmp_path, *TOY, "method.jitter=1e-5", "method.epochs=5")
    assert read_rows(tmp_path / "results" / "results.tsv")[-1]["verdict"] == "none"  # new task
    assert fewer.returncode == 0


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_hash(tmp_path: Path) -> None:
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    plain.mkdir()
    killed.mkdir()
    slow = [*TOY, "method.sleep_s=0.02"]
    assert _harness(plain, *slow).returncode == 0
    reference = read_rows(plain / "results" / "results.tsv")[-1]
    ck_args = [
        "checkpoint.enabled=true",
        "checkpoint.every_steps=5",
        "checkpoint.every_epochs=null",
    ]
    ck = killed / "results" / "checkpoints" / "toytrain" / "cells_toycells__cpu.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *slow, *ck_args],
        cwd=killed,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.15)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and ck.exists()
    done = _harness(killed, *slow, *ck_args)
    assert done.returncode == 0, done.stderr
    row = read_rows(killed / "results" / "results.tsv")[-1]
    assert row["resumed"] and row["output_hash"] == reference["output_hash"]
    assert not ck.exists()


@pytest.mark.slow
def test_contract_violations_are_one_line_errors(tmp_path: Path) -> None:
    bad = _harness(tmp_path, *TOY, "method.autocast=fp16")  # declares bf16 only
    assert bad.returncode == 2 and "does not support fp16" in bad.stderr
    ok = _harness(tmp_path, *TOY, "method.autocast=bf16")
    assert ok.returncode == 0, ok.stderr


# ---- layout ------------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_methods_import_only_the_contract_module() -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(m for m in _imports(p) if m.startswith("harness"))
        for p in (REPO / "methods").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if set(v) - {"harness.api"}}
    assert not offenders


# The harness's floors, lowest first: a module imports (at module level or lazily) only from its
# own floor or below. Entry modules (harness/*.py: cli, app, api, loop, ...) sit on top.
FLOORS = {"core": 0, "config": 1, "data": 2, "sinks": 3, "bench": 4, "reporting": 5, "optimize": 5}


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], 9) if len(parts) > 1 else 9


def test_no_arrow_from_a_lower_floor_to_a_higher_one() -> None:
    arrows = []
    for p in (REPO / "harness").rglob("*.py"):
        rel = p.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for dep in _imports(p):
            if dep.startswith("harness.") and _floor(dep) > _floor(name):
                arrows.append(f"{name} -> {dep}")
    assert arrows == [], arrows
    assert _floor("harness.bench.runner") == 4 and _floor("harness.app") == 9
    assert _floor("harness.sinks") == 3 and _floor("harness.cli") == 9


def test_harness_has_no_import_cycle_and_no_method_code() -> None:
    modules = {}
    for p in (REPO / "harness").rglob("*.py"):
        rel = p.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = {m for m in _imports(p) if m.startswith("harness")}
        assert not any(m.startswith("methods") for m in _imports(p)), p
    # module-level imports only (lazy imports inside functions are how cycles are avoided):
    top: dict[str, set[str]] = {}
    for p in (REPO / "harness").rglob("*.py"):
        rel = p.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        tree = ast.parse(p.read_text())
        deps = set()
        for node in tree.body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("harness")
            ):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("harness"))
        top[name] = {d for d in deps if d in modules}
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in top.get(node, ()):
            assert seen.get(dep) != 1, f"import cycle: {' -> '.join([*stack, node, dep])}"
            if dep not in seen:
                visit(dep, [*stack, node])
        seen[node] = 2

    for name in top:
        if name not in seen:
            visit(name, [])
    assert np.all([seen[n] == 2 for n in top])
