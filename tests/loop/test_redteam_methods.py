"""The red team on every real method, in this process at tiny sizes: the attack classes that
concern a method's own glue and counters (the loop's side of each class is proven through the
real ``loop try`` in ``test_loop_redteam.py``).

- patched evaluation or hashing: the seal over the read-only files names the function;
- a work count booked by editable code (reaching the glue's context through a frame): refused;
- backward skipped while ``step()`` is still called, and a trainable parameter frozen: the work
  counters differ from the reference run's, so the verdict is ``wrong`` whatever the outputs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from harness.bench.baseline import Baseline, verdict
from harness.bench.contract import RunContext
from harness.bench.protocol import Tampered, timed_call
from harness.bench.seal import Seal
from tests.harness.bench.test_contract import TINY

REPO = Path(__file__).resolve().parents[2]
TRAINERS = ["scvi", "cellbender", "scbert", "cellwhisperer"]
# the parameter each trainer's "frozen" attack stops training (CellWhisperer: the temperature)
FROZEN = {"scvi": None, "cellbender": None, "scbert": None, "cellwhisperer": "log_scale"}


def _readonly(method: str) -> list[str]:
    return yaml.safe_load((REPO / "conf" / "method" / f"{method}.yaml").read_text())["readonly"]


@pytest.fixture(scope="module", params=TRAINERS)
def trainer(request) -> Iterator[tuple[str, Any, Any]]:
    from harness.api import prepared

    name = request.param
    ready = prepared([f"method={name}", "hardware=cpu", "hardware.threads=1", *TINY[name]])
    _, _, reference = _run(ready)
    yield name, ready, reference


def _run(ready: Any) -> tuple[float, float, Any]:
    return timed_call(lambda ctx: ready.method.run(ready.state, ctx), ready.runtime, RunContext())


def _verdict(ready: Any, got: Any, reference: Any) -> tuple[str, dict[str, float]]:
    base = Baseline(
        output_hash="reference", outputs=reference.outputs, meta={}, work=reference.work
    )
    return verdict("candidate", got, base, ready.method.compare)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def test_trainer_reference_counts_gradients_and_moved_parameters(trainer):
    name, _, reference = trainer
    work = reference.work
    assert work["optimizer_steps"] > 0 and work["grad_accumulations"] > 0, (name, work)
    assert 0 < work["params_moved"] <= work["params_moved_of"], (name, work)


def test_backward_skipped_while_step_is_called_is_wrong(trainer):
    name, ready, reference = trainer
    plain = torch.Tensor.backward
    calls = [0]

    def sometimes(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] % 2 == 1:  # every second backward pass skipped
            plain(self, *args, **kwargs)

    with _patched(torch.Tensor, "backward", sometimes):
        _, _, got = _run(ready)
    assert got.work["optimizer_steps"] == reference.work["optimizer_steps"]  # step() still called
    tier, metrics = _verdict(ready, got, reference)
    assert tier == "wrong" and "work_grad_accumulations" in metrics, (name, metrics)


def test_a_frozen_trainable_parameter_is_wrong(trainer):
    name, ready, reference = trainer
    method = ready.method
    build = method.build

    def frozen(*args: Any, **kwargs: Any) -> Any:
        model = build(*args, **kwargs)
        target = FROZEN[name]
        trainable = (p for p in model.parameters() if p.requires_grad)
        param = getattr(model, target) if target else next(trainable)
        param.requires_grad_(False)
        return model

    with _patched(method, "build", frozen):
        _, _, got = _run(ready)
    tier, metrics = _verdict(ready, got, reference)
    assert tier == "wrong" and "work_params_moved" in metrics, (name, metrics)


def test_work_booked_from_editable_code_is_refused(trainer):
    name, ready, _ = trainer
    glue = sys.modules[type(ready.method).__module__]
    if not hasattr(glue, "train"):  # imported inside run(): patch it where it lives
        glue = sys.modules[f"methods.{name}.train"]
    train = glue.train

    def booking(*args: Any, **kwargs: Any) -> Any:
        out = train(*args, **kwargs)
        sys._getframe(1).f_locals["ctx"].work._add("optimizer_steps", 100)
        return out

    with _patched(glue, "train", booking), pytest.raises(Tampered, match="booked from"):
        _run(ready)


@pytest.mark.parametrize("method", ["rctd", *TRAINERS])
def test_patched_evaluation_or_hashing_breaks_the_seal(method):
    import importlib

    importlib.import_module(f"methods.{method}.method")
    check = importlib.import_module(f"methods.{method}.check")
    import harness.bench.hashing as hashing

    seal = Seal.for_files(REPO, _readonly(method))
    assert seal.problems() == []
    with _patched(check, "compare", lambda *a, **k: ({}, True)):
        assert any(f"methods.{method}.check.compare" in p for p in seal.problems())
    with _patched(hashing, "output_hash", lambda *a, **k: "0" * 16):
        assert any("hashing.output_hash" in p for p in seal.problems())
    assert seal.problems() == []


def test_work_hooks_called_by_editable_code_are_refused(trainer):
    """The hooks themselves, reached through torch's hook registries and called directly."""
    name, ready, _ = trainer
    glue = sys.modules[type(ready.method).__module__]
    if not hasattr(glue, "train"):
        glue = sys.modules[f"methods.{name}.train"]
    train = glue.train

    def calling(model: Any, *args: Any, **kwargs: Any) -> Any:
        out = train(model, *args, **kwargs)
        for p in model.parameters():
            hooks = getattr(p, "_post_accumulate_grad_hooks", None) or {}
            for hook in list(hooks.values()):
                hook(p)
        return out

    with _patched(glue, "train", calling), pytest.raises(Tampered, match="called from"):
        _run(ready)


def test_cellbender_posterior_with_fewer_draws_is_wrong():
    """A quarter of the posterior's Monte Carlo draws lands within the denoised tolerance (pure
    sampling noise); the decoder passes of the posterior are counted, so it is ``wrong``."""
    from harness.api import prepared

    ready = prepared(["method=cellbender", "hardware=cpu", "hardware.threads=1", *TINY["cellbender"]])  # fmt: skip
    _, _, reference = _run(ready)
    assert reference.work["posterior_decoder"] > 0, reference.work
    glue = sys.modules[type(ready.method).__module__]
    full = glue.noise_posterior

    def quarter(model: Any, staged: Any, cells: Any, n_samples: int, *args: Any, **kw: Any) -> Any:
        return full(model, staged, cells, max(1, n_samples // 4), *args, **kw)

    with _patched(glue, "noise_posterior", quarter):
        _, _, got = _run(ready)
    tier, metrics = _verdict(ready, got, reference)
    assert tier == "wrong" and "work_posterior_decoder" in metrics, metrics
