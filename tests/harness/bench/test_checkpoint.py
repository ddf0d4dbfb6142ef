"""harness.bench.checkpoint: exact mid-epoch resume, atomic files, clear messages for bad or
foreign checkpoints, live objects refused, Pyro param stores as tensors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.bench.checkpoint import (
    Checkpoint,
    CheckpointFile,
    check_payload,
    rng_state,
    set_rng_state,
)


def _setup(
    seed: int = 0,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: object, step: int) -> None:
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


def _checkpoint(path: Path, key: str, messages: list[str], **every: int | None) -> Checkpoint:
    return Checkpoint(CheckpointFile(path, key, log=messages.append), **every)


def test_mid_epoch_resume_continues_bit_identically(tmp_path: Path) -> None:
    np.random.seed(1)
    random.seed(1)
    model, opt, sched = _setup()
    for step in range(10):
        _step(model, opt, sched, step)
    expected = _flat(model)

    np.random.seed(1)
    random.seed(1)
    model, opt, sched = _setup()
    messages: list[str] = []
    ck = _checkpoint(tmp_path / "ck.pt", "run-a", messages, every_epochs=None, every_steps=4)
    ck.register(model=model, opt=opt, sched=sched)
    for step in range(7):  # epochs of 5 batches: the write at step 4 is mid-epoch 0 ...
        _step(model, opt, sched, step)
        ck.step_done(epoch=(step + 1) // 5, batch=(step + 1) % 5, step=step + 1,
                     extra=lambda: {"h": [1.0, 2.0]})  # fmt: skip
    ck.wait()  # the write ran in the background, from a snapshot taken at step 4
    assert ck.writes == 1 and ck.seconds > 0  # ... steps 5-7 are what the "kill" loses

    model, opt, sched = _setup(seed=123)  # a fresh process: other weights, other RNG state
    again = _checkpoint(tmp_path / "ck.pt", "run-a", messages, every_steps=4)
    again.register(model=model, opt=opt, sched=sched)
    state = again.resume()
    assert state is not None and (state.epoch, state.batch, state.step) == (0, 4, 4)
    assert again.resumed_from == (0, 4, 4) and state.extra["h"] == [1.0, 2.0]
    for step in range(state.step, 10):
        _step(model, opt, sched, step)
    assert torch.equal(_flat(model), expected)
    assert any("resuming" in m for m in messages)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away
    again.complete(epoch=2, step=10)
    assert not (tmp_path / "ck.pt").exists()  # a completed run leaves no checkpoint


def test_missing_corrupt_and_foreign_checkpoints_start_fresh(tmp_path: Path) -> None:
    messages: list[str] = []
    path = tmp_path / "ck.pt"
    assert _checkpoint(path, "a", messages).resume() is None
    model, opt, _ = _setup()
    ck = _checkpoint(path, "a", messages)
    ck.register(model=model, opt=opt)
    ck.epoch_done(epoch=1, step=1)
    ck.wait()
    assert path.exists()
    other = _checkpoint(path, "b", messages)
    other.register(model=model, opt=opt)
    assert other.resume() is None and "other code or another config" in messages[-1]

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a crash without atomic writes
    assert _checkpoint(path, "a", messages).resume() is None
    assert "unreadable" in messages[-1] and str(path) in messages[-1]
    path.write_text("not a checkpoint")
    assert _checkpoint(path, "a", messages).resume() is None
    assert all("\n" not in m for m in messages)


def test_live_objects_are_refused_with_their_key(tmp_path: Path) -> None:
    model, _, _ = _setup()
    ck = _checkpoint(tmp_path / "ck.pt", "k", [])
    ck.register(model=model)
    with pytest.raises(TypeError, match=r"checkpoint\.extra\.fn .*function"):
        ck.epoch_done(epoch=1, step=1, extra=lambda: {"fn": lambda: 1})
    with pytest.raises(TypeError, match="loader"):
        check_payload({"loader": torch.utils.data.DataLoader([1, 2])})
    with pytest.raises(TypeError, match="no state_dict"):
        ck.register(loader=torch.utils.data.DataLoader([1, 2]))
    assert not (tmp_path / "ck.pt").exists()


def test_write_failure_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    messages: list[str] = []
    model, _, _ = _setup()
    ck = _checkpoint(blocker / "ck.pt", "k", messages)  # parent is a file
    ck.register(model=model)
    ck.epoch_done(epoch=1, step=1)
    ck.wait()
    assert ck.writes == 0 and "could not write" in messages[-1]


def test_rng_state_roundtrip_and_disabled_checkpoint(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    state = rng_state({"g": gen})
    a = (torch.rand(3), np.random.random(), random.random(), torch.rand(2, generator=gen))
    set_rng_state(state, {"g": gen})
    b = (torch.rand(3), np.random.random(), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2] and torch.equal(a[3], b[3])
    off = Checkpoint.disabled()
    assert not off.enabled and off.resume() is None
    off.step_done(0, 1, 1)
    off.epoch_done(1, 1)
    off.complete(1, 1)
    assert off.writes == 0


def test_pyro_param_store_saved_as_tensors_with_constraints_by_name(tmp_path: Path) -> None:
    pyro = pytest.importorskip("pyro")
    from torch.distributions import constraints

    store = pyro.get_param_store()
    store.clear()
    pyro.param("rate", torch.tensor([0.5, 2.0]), constraint=constraints.positive)
    pyro.param("frac", torch.tensor(0.3), constraint=constraints.unit_interval)
    pyro.param("loc", torch.tensor([1.0, -1.0]))
    pyro.param("bounded", torch.tensor(0.5), constraint=constraints.interval(0.0, 2.0))
    before = {k: v.detach().clone() for k, v in store.items()}
    ck = _checkpoint(tmp_path / "ck.pt", "p", [])
    ck.register(params=store)
    ck.epoch_done(epoch=1, step=3)
    ck.wait()
    store.clear()
    pyro.param("rate", torch.tensor([9.0, 9.0]), constraint=constraints.positive)
    again = _checkpoint(tmp_path / "ck.pt", "p", [])
    again.register(params=pyro.get_param_store())
    assert again.resume() is not None
    after = dict(pyro.get_param_store().items())
    assert set(after) == set(before)
    for name, value in before.items():
        assert torch.allclose(after[name], value)
    assert pyro.get_param_store()._constraints["frac"] is constraints.unit_interval
    store.clear()
