"""The template method of README "Adding a method" (``examples/template_method``), exercised the
way a stranger uses it: copied into a tree beside harness/, conf/ and methods/, then run through
the real CLI (a baseline row, then an exact rerun, its work counted); its tolerance tier can
fail; its YAML agrees with its schema. Its surfaces are checked in tests/loop/test_surfaces.py."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

from harness.config.schema import ROLE_GROUPS, ROLE_KEYS
from harness.scaffold import render
from harness.sinks.results_tsv import read_rows
from tests.conftest import REPO
from tests.harness.config.test_defaults_agree import DECLARATIONS, _disagreements

EXAMPLE = REPO / "examples" / "template_method"
# the smallest sensible benchmark of the template (its line of the TINY table)
TINY = ["dataset.n_cells=160", "dataset.n_genes=30", "method.n_components=4", "method.epochs=3",
        "method.batch_size=32", "bench.warmup_steps=2"]  # fmt: skip


def template_tree(root: Path) -> Path:
    """``root`` holding the harness as shipped plus the template copied over it (README step 1)."""
    for name in ("harness", "conf", "methods"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _harness(tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_the_template_runs_through_the_real_cli(tmp_path: Path) -> None:
    tree = template_tree(tmp_path)
    listing = _harness(tree, "list")
    assert re.search(
        r"template\s+role cells\s+train\s+bitwise\s+dataset=cells/template", listing.stdout
    )
    args = ["method=template", "hardware=cpu", "hardware.threads=1", "tracking.mlflow=false", *TINY]
    first = _harness(tree, *args)
    assert first.returncode == 0, first.stderr
    second = _harness(tree, *args)
    assert second.returncode == 0, second.stderr
    a, b = read_rows(tree / "results" / "results.tsv")
    assert (a["method"], a["dataset"], a["timing"]) == ("template", "cells/template", "train")
    assert (a["status"], a["verdict"]) == ("baseline", "none")
    assert (b["verdict"], b["output_hash"]) == ("exact", a["output_hash"])
    assert int(a["n_runs"]) == 3  # one timed training, one sample per epoch (ctx.mark)
    # 160 cells / 32 per batch = 5 steps per epoch × 3 epochs; the glue's hooks counted them
    assert re.search(r"work_optimizer_steps\s+: 15\b", second.stdout), second.stdout
    assert re.search(r"latent_r2\s+: 0\.\d", second.stdout)
    wrong = _harness(tree, *args, "method.epochs=0")  # checked against the schema's range
    assert (
        wrong.returncode == 2
        and wrong.stderr.strip() == "error: config method.epochs=0: must be >= 1"
    )


@pytest.fixture
def template(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``methods.template.method`` imported from the example (not copied into methods/)."""
    import methods

    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(EXAMPLE / "methods")])
    yield importlib.import_module("methods.template.method")
    for name in [n for n in sys.modules if n.startswith("methods.template")]:
        del sys.modules[name]


def test_the_template_tolerance_tier_passes_noise_and_fails_a_shift(template) -> None:
    from harness.api import RunResult
    from methods.template.config import TemplateConfig

    method = template.Template(TemplateConfig(name="template"), None)
    gen = np.random.default_rng(0)
    ref = {"loadings": gen.normal(size=(30, 4)), "recon_mse": np.array([0.7])}
    noisy = {**ref, "loadings": ref["loadings"] * (1 + 1e-7 * gen.normal(size=(30, 4)))}
    metrics, ok = method.compare(RunResult(outputs=noisy), ref)
    assert ok and metrics["subspace"] > 0.999999
    shifted = {**ref, "loadings": ref["loadings"] + 0.01 * gen.normal(size=(30, 4))}
    assert not method.compare(RunResult(outputs=shifted), ref)[1]
    worse = {**ref, "recon_mse": np.array([0.702])}
    assert not method.compare(RunResult(outputs=worse), ref)[1]
    fewer = {**ref, "loadings": ref["loadings"][:, :3]}  # another shape is never close
    assert not method.compare(RunResult(outputs=fewer), ref)[1]


@pytest.mark.parametrize("rel", ["conf/method/template.yaml", "conf/dataset/cells/template.yaml"])
def test_the_template_yaml_agrees_with_its_schema(template, rel: str) -> None:
    values = yaml.safe_load((EXAMPLE / rel).read_text())
    module, name = values["_schema_"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert _disagreements(values, cls, frozenset(DECLARATIONS | {"defaults"})) == []


@pytest.mark.parametrize("role", sorted(ROLE_GROUPS))
def test_new_method_renders_the_template_for_every_role(role: str) -> None:
    files = render("my_method", role)
    group = ROLE_GROUPS[role]
    assert {"conf/method/my_method.yaml", f"conf/dataset/{group}/my_method.yaml"} <= set(files)
    assert "methods/my_method/method.py" in files
    text = "\n".join(files.values())
    assert "template" not in text.lower()
    assert "class MyMethod:" in text and "class MyMethodConfig(MethodConfig)" in text
    assert text.count(f'ROLE: ClassVar[str] = "{role}"') == 2  # the method's and its dataset's
    assert f"dataset: {group}/my_method" in files["conf/method/my_method.yaml"]
    keys = re.search(r"KEYS: tuple\[str, \.\.\.\] = (\(.*\))", files["methods/my_method/data.py"])
    assert keys and tuple(ast.literal_eval(keys[1])) == ROLE_KEYS[role]
    spec = yaml.safe_load(files["conf/method/my_method.yaml"])
    py = {rel for rel in files if rel.endswith(".py")}
    assert set(spec["editable"]) | set(spec["readonly"]) == py  # every file on one list


def test_new_method_writes_a_method_that_runs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    tree = template_tree(tmp_path)
    shutil.copytree(EXAMPLE, tree / "examples" / "template_method")
    made = _harness(tree, "new-method", "spotty", "spatial+reference")
    assert made.returncode == 0, made.stderr
    assert "wrote methods/spotty/method.py" in made.stdout
    again = _harness(tree, "new-method", "spotty")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = _harness(tree, "new-method", "other", "spatial")
    assert bad.returncode == 2 and "role 'spatial' is not one of" in bad.stderr
    args = ["method=spotty", "hardware=cpu", "hardware.threads=1", "tracking.mlflow=false", *TINY]
    run = _harness(tree, *args)
    assert run.returncode == 0, run.stderr
    (row,) = read_rows(tree / "results" / "results.tsv")
    assert (row["method"], row["dataset"], row["status"]) == (
        "spotty",
        "spatial/spotty",
        "baseline",
    )


def test_new_method_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from harness.scaffold import main, write

    assert main(["--help"]) == 0 and "new-method NAME [ROLE]" in capsys.readouterr().out
    assert main([]) == 2 and "usage:" in capsys.readouterr().err
    assert main(["Bad-Name"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: new-method 'Bad-Name'")
    written = write(tmp_path, "tiny_one", "cells+labels")
    assert "conf/dataset/labelled/tiny_one.yaml" in written and (tmp_path / written[0]).exists()
