"""Shared machinery of the tolerance calibrations: run a method in-process (prepare untimed,
one ``run`` as the harness times it), monkeypatching context managers for the variants (the
method files are never edited: skipped backward passes, perturbed initialisations, reseeded
random streams, frozen parameters, rewritten arguments), and replaying the reference's
training for variants that change only the inference. The table: ``calibrate.table``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from harness.bench.contract import RunContext, RunResult
from harness.bench.protocol import timed_call

HITS: dict[str, int] = {}  # calls of the patched functions (a patch that never ran is reported)


def run_variant(
    overrides: list[str],
    patch: Callable[[], Any] | None = None,
    max_steps: Callable[[Any], int | None] | None = None,
) -> tuple[Any, RunResult]:
    """``python -m harness <overrides>`` up to ``prepare``, then one run under ``patch``;
    ``max_steps(ready)``: a step budget for the run's context (a training stopped early)."""
    from harness.api import prepared

    ready = prepared(overrides)
    ctx = RunContext(max_steps=max_steps(ready) if max_steps else None)
    with patch() if patch else contextlib.nullcontext():
        _, _, result = timed_call(lambda c: ready.method.run(ready.state, c), ready.runtime, ctx)
    return ready, result


@contextlib.contextmanager
def patched(
    modules: Any | Sequence[Any], name: str, wrapper: Callable[[Callable], Callable]
) -> Iterator[None]:
    """Replace ``name`` by ``wrapper(original)`` in ``modules`` (a module or class, or several:
    every one that binds the same original object, so a caller that imported the name directly
    is patched too); calls are counted in ``HITS[name]``."""
    mods = list(modules) if isinstance(modules, (list, tuple)) else [modules]
    original = next(getattr(m, name) for m in mods if hasattr(m, name))
    inner = wrapper(original)

    @functools.wraps(original)
    def counted(*a: Any, **kw: Any) -> Any:
        HITS[name] = HITS.get(name, 0) + 1
        return inner(*a, **kw)

    targets = [m for m in mods if getattr(m, name, None) is original]
    for m in targets:
        setattr(m, name, counted)
    try:
        yield
    finally:
        for m in targets:
            setattr(m, name, original)


def set_args(**changes: Callable[[Any], Any]) -> Callable[[Callable], Callable]:
    """A wrapper that rewrites named arguments of a call: ``name=lambda old: new``."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)  # follows __wrapped__: the innermost function's

        @functools.wraps(fn)
        def call(*a: Any, **kw: Any) -> Any:
            bound = sig.bind(*a, **kw)
            bound.apply_defaults()
            for k, f in changes.items():
                bound.arguments[k] = f(bound.arguments[k])
            return fn(*bound.args, **bound.kwargs)

        return call

    return wrap


def stacked(*factories: Callable[[], Any]) -> Callable[[], Any]:
    """One context manager factory entering all of ``factories``."""

    @contextlib.contextmanager
    def cm() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for f in factories:
                stack.enter_context(f())
            yield

    return cm


def skip_backward(every: int = 3) -> Any:
    """Every ``every``-th ``loss.backward()`` does nothing (the optimizer still steps: on the
    gradients left by ``zero_grad``, i.e. none)."""
    calls = [0]

    def wrap(fn: Callable) -> Callable:
        def backward(self: torch.Tensor, *a: Any, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] % every == 0:
                return None
            return fn(self, *a, **kw)

        return backward

    return patched(torch.Tensor, "backward", wrap)


def perturb(model: torch.nn.Module, scale: float = 1e-6, seed: int = 123) -> None:
    """Add ``scale`` × N(0, 1) to every floating-point parameter (a 1e-6 perturbed init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))


def perturbed_build(cls: type) -> Any:
    """``cls.build`` (the method's model construction, before the work counters look at the
    parameters) followed by a 1e-6 perturbation of the initialisation."""

    def wrap(fn: Callable) -> Callable:
        def build(self: Any, *a: Any, **kw: Any) -> Any:
            model = fn(self, *a, **kw)
            perturb(model)
            return model

        return build

    return patched(cls, "build", wrap)


def on_model(fn: Callable[[torch.nn.Module], None]) -> Callable[[Callable], Callable]:
    """A wrapper for ``train(model, ...)``: ``fn(model)`` first (perturb, freeze)."""

    def wrap(train: Callable) -> Callable:
        def call(model: Any, *a: Any, **kw: Any) -> Any:
            fn(model)
            return train(model, *a, **kw)

        return call

    return wrap


def reseed(seed: int = 12345) -> Callable[[torch.nn.Module], None]:
    """For ``on_model``: the global torch generator reseeded just before training (the
    training's draws — guide samples, dropout masks — come from another stream; data order
    and initialisation unchanged)."""
    return lambda model: torch.manual_seed(seed)


def freeze(*names: str) -> Callable[[torch.nn.Module], None]:
    """Parameters (by prefix of their name) that will not train."""

    def fn(model: torch.nn.Module) -> None:
        hit = [p for n, p in model.named_parameters() if n.startswith(names)]
        assert hit, f"no parameter named {names}"
        for p in hit:
            p.requires_grad_(False)

    return fn


# ---- replaying the reference's training ---------------------------------------------------
def _snapshot(model: torch.nn.Module) -> dict[str, Any]:
    """Per submodule: its parameters (with requires_grad), buffers and plain attributes."""
    snap = {}
    for name, m in model.named_modules():
        params = {k: (v.detach().clone(), v.requires_grad) for k, v in m._parameters.items()
                  if v is not None}  # fmt: skip
        bufs = {k: v.clone() for k, v in m._buffers.items() if v is not None}
        plain = {k: v for k, v in vars(m).items()
                 if isinstance(v, (bool, int, float, str)) and not k.startswith("_")}  # fmt: skip
        snap[name] = (params, bufs, plain)
    return snap


def _restore(model: torch.nn.Module, snap: Mapping[str, Any]) -> None:
    for name, m in model.named_modules():
        params, bufs, plain = snap[name]
        for k, (v, grad) in params.items():  # new objects: shapes may differ (a pruned head)
            m._parameters[k] = torch.nn.Parameter(v.clone(), requires_grad=grad)
        for k, v in bufs.items():
            m._buffers[k] = v.clone()
        m.__dict__.update(plain)


class Replay:
    """Record the reference's trained model (``train(model, ...)`` in ``modules``) and hand it
    to later runs instead of training: variants that change only the inference then cost the
    inference alone. Their work counters are compared with a replayed reference's."""

    def __init__(self, modules: Any | Sequence[Any], name: str = "train") -> None:
        self.modules, self.name = modules, name
        self.saved: tuple[dict[str, Any], Any] | None = None

    def record(self) -> Any:
        def wrap(fn: Callable) -> Callable:
            def call(model: Any, *a: Any, **kw: Any) -> Any:
                out = fn(model, *a, **kw)
                self.saved = (_snapshot(model), copy.deepcopy(out))
                return out

            return call

        return patched(self.modules, self.name, wrap)

    def replay(self) -> Any:
        assert self.saved is not None, "record the reference first"
        snap, out = self.saved

        def wrap(fn: Callable) -> Callable:
            def call(model: Any, *a: Any, **kw: Any) -> Any:
                _restore(model, snap)
                return copy.deepcopy(out)

            return call

        return patched(self.modules, self.name, wrap)
