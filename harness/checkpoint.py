"""Checkpoint/resume for any trainer: tensors and plain values only, written atomically.

A checkpoint holds the trainer's position (``step``, ``epoch``, a loader position), the
``state_dict()`` of each stateful object (module, optimizer, scheduler), the RNG states
(torch CPU and CUDA, numpy's legacy global, python's ``random``, and any named
``torch.Generator``) and ``extra`` values (e.g. metric histories). The payload is checked
before writing: only tensors, numbers, strings, booleans, ``None`` and lists/tuples/dicts of
them are allowed, so live objects (lambdas, loaders, CUDA handles) are refused at the first
save with the key that holds them, not found at the end of a long run. Files are loaded with
``torch.load(weights_only=True)``.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
target, so a kill at any moment leaves either the old or the new checkpoint. A missing,
unreadable or foreign checkpoint (another ``key``) is reported in one line and the trainer
starts fresh; a failed write is reported and training goes on.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "harness-checkpoint/1"
_LEAVES = (torch.Tensor, int, float, bool, str, type(None))


def _stderr(message: str) -> None:
    print(f"checkpoint: {message}", file=sys.stderr, flush=True)


def check_payload(value: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value that is not a tensor/plain value/container."""
    if isinstance(value, _LEAVES):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; use str or int")
            check_payload(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_payload(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}: checkpoints hold "
        "tensors and plain values only (save its state, not the object)"
    )


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The global RNG states (torch CPU/CUDA, numpy, python) and those of ``generators``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name in state["generators"]:
            gen.set_state(state["generators"][name])


@dataclass
class TrainState:
    """A loaded checkpoint: where training stopped and what to restore."""

    step: int
    epoch: int
    states: dict[str, Any]
    loader: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)

    def restore(self, objects: Mapping[str, Any]) -> None:
        """``load_state_dict`` into each named object (module, optimizer, scheduler)."""
        missing = [k for k in objects if k not in self.states]
        if missing:
            raise KeyError(f"checkpoint holds no state for {missing}")
        for name, obj in objects.items():
            obj.load_state_dict(self.states[name])


class Checkpointer:
    """Save/load one checkpoint file; ``path=None`` turns every call into a no-op.

    ``key`` identifies the run (e.g. a hash of its config and data): a checkpoint written
    under another key is not resumed. ``log`` receives the one-line messages.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        key: str = "",
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.log = log

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def save(
        self,
        *,
        step: int,
        epoch: int,
        objects: Mapping[str, Any],
        loader: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        generators: Mapping[str, torch.Generator] | None = None,
    ) -> bool:
        """Write a checkpoint atomically; True when written.

        A payload holding a live object raises TypeError (a programming error, raised at the
        first save). An I/O failure is logged and returns False: training continues.
        """
        if self.path is None:
            return False
        payload = {
            "format": FORMAT,
            "key": self.key,
            "step": int(step),
            "epoch": int(epoch),
            "states": {name: obj.state_dict() for name, obj in objects.items()},
            "loader": dict(loader or {}),
            "extra": dict(extra or {}),
            "rng": rng_state(generators),
        }
        check_payload(payload)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            self.log(f"could not write {self.path} ({exc}); training continues without it")
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False
        return True

    def load(self, generators: Mapping[str, torch.Generator] | None = None) -> TrainState | None:
        """Read the checkpoint and restore the RNG states; None (and a message) to start fresh.

        Tensors are loaded on the CPU; ``load_state_dict`` moves them to the objects' devices.
        """
        if self.path is None:
            return None
        if not self.path.exists():
            self.log(f"no checkpoint at {self.path}: starting fresh")
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            state = TrainState(
                step=int(payload["step"]),
                epoch=int(payload["epoch"]),
                states=payload["states"],
                loader=payload["loader"],
                extra=payload["extra"],
                rng=payload["rng"],
            )
        except Exception as exc:  # truncated zip, unpickling refusal, missing fields, ...
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            self.log(f"checkpoint {self.path} is unreadable ({reason}): starting fresh")
            return None
        if payload.get("key") != self.key:
            self.log(f"checkpoint {self.path} belongs to another run/config: starting fresh")
            return None
        set_rng_state(state.rng, generators)
        self.log(f"resuming from {self.path} (epoch {state.epoch}, step {state.step})")
        return state

    def clear(self) -> None:
        """Remove the checkpoint (after a run completed, so the next run starts fresh)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
