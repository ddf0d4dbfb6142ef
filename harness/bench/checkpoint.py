"""Harness-owned checkpoints for trainers: tensors and plain values only, written atomically.

The runtime hands a trainer a :class:`Checkpoint` (``ctx.checkpoint``). The trainer registers
its stateful components — modules, optimizers, schedulers (anything with ``state_dict`` /
``load_state_dict``), a Pyro param store (saved as unconstrained tensors with its constraints
by name), named ``torch.Generator`` objects — then asks :meth:`Checkpoint.resume` where to
start and reports its position after each step (:meth:`Checkpoint.step_done`) and epoch
(:meth:`Checkpoint.epoch_done`). The harness decides when to write (``checkpoint.every_epochs``,
``every_steps``, ``every_minutes``), times the writes separately (``seconds``: excluded from the
timed region) and keys the file by task + code version: a checkpoint of other code or another
config is refused with one line and a fresh start.

A checkpoint holds the position (``step``, ``epoch``, the loader position inside the epoch),
the ``state_dict()`` of each component, the RNG states (torch CPU and CUDA, numpy's legacy
global, python's ``random``, the named generators) and ``extra`` plain values (histories). The
payload is checked before writing: only tensors, numbers, strings, booleans, ``None`` and
lists/tuples/dicts of them, so a live object is refused at the first save with the key that
holds it. Files are read with ``torch.load(weights_only=True)``; writes are atomic (temporary
file, fsync, rename), so a kill at any moment leaves the old or the new checkpoint.

Writes happen in the background: the trainer's thread only snapshots the state (tensors
cloned, the payload checked) and goes on; one writer thread serialises, fsyncs and renames,
one write at a time (a new one first waits for the previous). ``complete`` waits for the last.
Measured with CellBender (20 epochs of ~0.4 s, a checkpoint every epoch, 1 training thread):
synchronous writes cost 42 ms each, 10% of the training time; in the background 5 ms (1.2%)
(``python benchmarks/cellbender_peer.py --checkpoint 1``).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.core.fsio import atomic_write

FORMAT = "harness-checkpoint/2"
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

    @property
    def batch(self) -> int:
        """Batches of ``epoch`` already done (resume continues mid-epoch from here)."""
        return int(self.loader.get("batch", 0))

    def restore(self, objects: Mapping[str, Any]) -> None:
        """``load_state_dict`` into each named object (module, optimizer, scheduler)."""
        missing = [k for k in objects if k not in self.states]
        if missing:
            raise KeyError(f"checkpoint holds no state for {missing}")
        for name, obj in objects.items():
            obj.load_state_dict(self.states[name])


class CheckpointFile:
    """One checkpoint file: atomic save, checked load. ``log`` receives one-line messages."""

    def __init__(
        self, path: str | os.PathLike[str], key: str, log: Callable[[str], None] = _stderr
    ) -> None:
        self.path = Path(path)
        self.key = key
        self.log = log

    def save(self, payload: dict[str, Any]) -> bool:
        """Write ``payload`` (checked: tensors and plain values only) atomically; True when
        written. An I/O failure is logged and returns False: training continues."""
        payload = {"format": FORMAT, "key": self.key, **payload}
        check_payload(payload)
        try:
            atomic_write(self.path, lambda fh: torch.save(payload, fh))
        except OSError as exc:
            self.log(f"could not write {self.path} ({exc}); training continues without it")
            return False
        return True

    def load(self) -> dict[str, Any] | None:
        """The payload, or None with one line: missing, unreadable, or another key."""
        if not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            for name in ("step", "epoch", "states", "loader", "extra", "rng"):
                if name not in payload:
                    raise KeyError(name)
        except Exception as exc:  # truncated zip, unpickling refusal, missing fields, ...
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            self.log(f"checkpoint {self.path} is unreadable ({reason}): starting fresh")
            return None
        if payload.get("key") != self.key:
            theirs = str(payload.get("key", ""))[:12]
            self.log(
                f"checkpoint {self.path} was written by other code or another config "
                f"(key {theirs} ≠ {self.key[:12]}): starting fresh"
            )
            return None
        return payload

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _constraint_to_plain(c: Any) -> dict[str, Any]:
    """A ``torch.distributions.constraints`` object as a name and its parameters."""
    from torch.distributions import constraints as C

    simple = {
        "real": C.real, "positive": C.positive, "nonnegative": C.nonnegative,
        "unit_interval": C.unit_interval, "simplex": C.simplex, "boolean": C.boolean,
        "real_vector": C.real_vector, "lower_cholesky": C.lower_cholesky,
        "positive_definite": C.positive_definite, "corr_cholesky": C.corr_cholesky,
    }  # fmt: skip
    for name, obj in simple.items():
        if c is obj:
            return {"name": name}
    if isinstance(c, C.interval):  # interval, half-open interval
        kind = "half_open_interval" if isinstance(c, C.half_open_interval) else "interval"
        return {"name": kind, "low": float(c.lower_bound), "high": float(c.upper_bound)}
    if isinstance(c, C.greater_than_eq):
        return {"name": "greater_than_eq", "low": float(c.lower_bound)}
    if isinstance(c, C.greater_than):
        return {"name": "greater_than", "low": float(c.lower_bound)}
    if isinstance(c, C.less_than):
        return {"name": "less_than", "high": float(c.upper_bound)}
    raise TypeError(f"param store constraint {c!r} cannot be saved by name")


def _constraint_from_plain(d: Mapping[str, Any]) -> Any:
    from torch.distributions import constraints as C

    name = d["name"]
    if name in ("interval", "half_open_interval"):
        return getattr(C, name)(d["low"], d["high"])
    if name in ("greater_than", "greater_than_eq"):
        return getattr(C, name)(d["low"])
    if name == "less_than":
        return C.less_than(d["high"])
    return getattr(C, name)


class ParamStoreState:
    """A Pyro param store as a checkpoint component: unconstrained tensors + constraint
    names (``state_dict`` / ``load_state_dict``), never the store object itself."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def state_dict(self) -> dict[str, Any]:
        state = self.store.get_state()
        return {
            "params": {k: v.detach().clone() for k, v in state["params"].items()},
            "constraints": {k: _constraint_to_plain(c) for k, c in state["constraints"].items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        constraints = {k: _constraint_from_plain(c) for k, c in state["constraints"].items()}
        self.store.set_state({"params": dict(state["params"]), "constraints": constraints})


def _snapshot(value: Any) -> Any:
    """A copy of a state tree the trainer cannot change under the writer: tensors cloned."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_snapshot(v) for v in value)
    return value


class Checkpoint:
    """The checkpoint object the runtime hands a trainer (``ctx.checkpoint``).

    Disabled (every call a no-op, :meth:`resume` → None) unless ``checkpoint.enabled`` and
    this is not the warm-up. ``seconds`` is the time spent writing (excluded from timing);
    ``resumed_from`` is the (epoch, batch, step) a resumed run started at, or None.
    """

    def __init__(
        self,
        file: CheckpointFile | None,
        every_epochs: int | None = 1,
        every_steps: int | None = None,
        every_minutes: float | None = None,
        keep: bool = False,
    ) -> None:
        self.file = file
        self.every_epochs, self.every_steps = every_epochs, every_steps
        self.every_minutes, self.keep = every_minutes, keep
        self.components: dict[str, Any] = {}
        self.generators: dict[str, torch.Generator] = {}
        self.seconds = 0.0
        self.writes = 0
        self.resumed_from: tuple[int, int, int] | None = None
        self._last_write = time.monotonic()
        self._writer: threading.Thread | None = None

    @classmethod
    def disabled(cls) -> Checkpoint:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.file is not None

    def register(self, **components: Any) -> None:
        """Stateful components by name: objects with ``state_dict``/``load_state_dict``, a Pyro
        param store (wrapped as :class:`ParamStoreState`), or ``torch.Generator`` objects."""
        for name, obj in components.items():
            if isinstance(obj, torch.Generator):
                self.generators[name] = obj
            elif (
                hasattr(obj, "get_state")
                and hasattr(obj, "set_state")
                and hasattr(obj, "named_parameters")
            ):
                self.components[name] = ParamStoreState(obj)
            elif hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
                self.components[name] = obj
            else:
                raise TypeError(
                    f"checkpoint component {name!r} ({type(obj).__name__}) has no state_dict"
                )

    def resume(self) -> TrainState | None:
        """Restore the registered components and RNG states from a matching checkpoint and
        return where to continue (epoch, batch within it, step); None: start fresh."""
        if self.file is None:
            return None
        payload = self.file.load()
        if payload is None:
            return None
        state = TrainState(
            step=int(payload["step"]),
            epoch=int(payload["epoch"]),
            states=payload["states"],
            loader=payload["loader"],
            extra=payload["extra"],
            rng=payload["rng"],
        )
        state.restore(self.components)
        set_rng_state(state.rng, self.generators)
        self.resumed_from = (state.epoch, state.batch, state.step)
        self.file.log(
            f"resuming from {self.file.path} (epoch {state.epoch}, batch {state.batch}, "
            f"step {state.step})"
        )
        return state

    def _write(self, epoch: int, batch: int, step: int, extra: Mapping[str, Any] | None) -> None:
        """Snapshot now, write in the background (module doc)."""
        assert self.file is not None
        t0 = time.perf_counter()
        payload = {
            "step": int(step),
            "epoch": int(epoch),
            "states": _snapshot({name: obj.state_dict() for name, obj in self.components.items()}),
            "loader": {"epoch": int(epoch), "batch": int(batch)},
            "extra": _snapshot(dict(extra or {})),
            "rng": _snapshot(rng_state(self.generators)),
        }
        check_payload(payload)  # a live object is refused here, in the trainer's thread
        self.wait()
        file = self.file

        def write() -> None:
            if file.save(payload):
                self.writes += 1

        self._writer = threading.Thread(target=write, name="checkpoint-writer")
        self._writer.start()
        self._last_write = time.monotonic()
        self.seconds += time.perf_counter() - t0

    def wait(self) -> None:
        """Block until the background write (if any) is on disk."""
        if self._writer is not None:
            t0 = time.perf_counter()
            self._writer.join()
            self._writer = None
            self.seconds += time.perf_counter() - t0

    def _minutes_due(self) -> bool:
        return (
            self.every_minutes is not None
            and time.monotonic() - self._last_write >= 60 * self.every_minutes
        )

    def step_done(
        self,
        epoch: int,
        batch: int,
        step: int,
        extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """After an optimizer step: ``batch`` batches of ``epoch`` are done, ``step`` in all.
        Writes when ``every_steps`` or ``every_minutes`` is due."""
        if self.file is None:
            return
        if (self.every_steps and step % self.every_steps == 0) or self._minutes_due():
            self._write(epoch, batch, step, extra() if extra else None)

    def epoch_done(
        self, epoch: int, step: int, extra: Callable[[], Mapping[str, Any]] | None = None
    ) -> None:
        """After epoch ``epoch - 1`` (``epoch`` epochs done). Writes when ``every_epochs`` is
        due."""
        if self.file is None:
            return
        if (self.every_epochs and epoch % self.every_epochs == 0) or self._minutes_due():
            self._write(epoch, 0, step, extra() if extra else None)

    def complete(
        self, epoch: int, step: int, extra: Callable[[], Mapping[str, Any]] | None = None
    ) -> None:
        """Training finished: keep a final checkpoint (``checkpoint.keep``) or remove it."""
        if self.file is None:
            return
        if self.keep:
            self._write(epoch, 0, step, extra() if extra else None)
            self.wait()
        else:
            self.wait()
            self.file.clear()
