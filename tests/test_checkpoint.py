"""harness.checkpoint: exact resume, atomic files, clear messages for bad checkpoints."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.checkpoint import Checkpointer, check_payload, rng_state, set_rng_state


def _setup(
    seed: int = 0,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: object, steps: range) -> None:
    for step in steps:
        gen = np.random.default_rng(step)  # data depend on the step only (a loader position)
        x = torch.as_tensor(gen.normal(size=(16, 4)), dtype=torch.float32)
        noise = torch.randn(16, 1) + np.random.normal() + random.random()  # all global RNGs
        loss = ((model(x) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_resume_continues_bit_identically(tmp_path: Path) -> None:
    np.random.seed(1)
    random.seed(1)
    model, opt, sched = _setup()
    _train(model, opt, sched, range(10))
    expected = _flat(model)

    np.random.seed(1)
    random.seed(1)
    model, opt, sched = _setup()
    _train(model, opt, sched, range(4))
    messages: list[str] = []
    ck = Checkpointer(tmp_path / "ck.pt", key="run-a", log=messages.append)
    objects = {"model": model, "opt": opt, "sched": sched}
    assert ck.save(step=4, epoch=0, objects=objects, loader={"batch": 4}, extra={"h": [1.0, 2.0]})
    _train(model, opt, sched, range(4, 7))  # progress that the "kill" loses

    model, opt, sched = _setup(seed=123)  # a fresh process: other weights, other RNG state
    state = Checkpointer(tmp_path / "ck.pt", key="run-a", log=messages.append).load()
    assert state is not None and state.step == 4 and state.loader == {"batch": 4}
    assert state.extra["h"] == [1.0, 2.0]
    state.restore({"model": model, "opt": opt, "sched": sched})
    _train(model, opt, sched, range(state.step, 10))
    assert torch.equal(_flat(model), expected)
    assert any("resuming" in m for m in messages)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_missing_corrupt_and_foreign_checkpoints_start_fresh(tmp_path: Path) -> None:
    messages: list[str] = []
    path = tmp_path / "ck.pt"
    assert Checkpointer(path, log=messages.append).load() is None
    assert "no checkpoint" in messages[-1]

    model, opt, _ = _setup()
    Checkpointer(path, key="a").save(step=1, epoch=1, objects={"model": model, "opt": opt})
    assert Checkpointer(path, key="b", log=messages.append).load() is None
    assert "another run" in messages[-1]

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a crash without atomic writes
    assert Checkpointer(path, key="a", log=messages.append).load() is None
    assert "unreadable" in messages[-1] and str(path) in messages[-1]
    path.write_text("not a checkpoint")
    assert Checkpointer(path, key="a", log=messages.append).load() is None
    assert all("\n" not in m for m in messages)


def test_live_objects_are_refused_with_their_key(tmp_path: Path) -> None:
    model, opt, _ = _setup()
    ck = Checkpointer(tmp_path / "ck.pt")
    with pytest.raises(TypeError, match=r"checkpoint\.extra\.fn .*function"):
        ck.save(step=0, epoch=0, objects={"model": model}, extra={"fn": lambda: 1})
    with pytest.raises(TypeError, match="loader"):
        check_payload({"loader": torch.utils.data.DataLoader([1, 2])})
    assert not (tmp_path / "ck.pt").exists()


def test_write_failure_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    messages: list[str] = []
    model, _, _ = _setup()
    ck = Checkpointer(blocker / "ck.pt", log=messages.append)  # parent is a file
    assert ck.save(step=0, epoch=0, objects={"model": model}) is False
    assert "could not write" in messages[-1]


def test_rng_state_roundtrip_and_disabled_checkpointer(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    state = rng_state({"g": gen})
    a = (torch.rand(3), np.random.random(), random.random(), torch.rand(2, generator=gen))
    set_rng_state(state, {"g": gen})
    b = (torch.rand(3), np.random.random(), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2] and torch.equal(a[3], b[3])
    off = Checkpointer(None)
    assert not off.enabled and off.load() is None
    assert off.save(step=0, epoch=0, objects={}) is False
    off.clear()
