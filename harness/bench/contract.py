"""The method contract: what every ``methods/<name>/`` provides, and what the harness hands it.

A method is a class named by ``_target_`` in ``conf/method/<name>.yaml``; its config schema is
the dataclass named by ``_schema_`` (a :class:`~harness.config.schema.MethodConfig` subclass
whose class attributes declare ROLE, TIMING, DETERMINISM and AUTOCAST). Lifecycle — the
:class:`Method` protocol, which :func:`check_method` checks every method class against::

    check_inputs(data) → prepare(data) → state                      untimed
    run(state, ctx) → RunResult | {name: output}                    timed (per TIMING)
    quality(result, data) → {metric: value}                         read-only evaluation
    compare(result, reference) → ({metric: value}, ok)              read-only tolerance tier
    write_output(result, data, path)                                optional, for run.output

``ctx`` (:class:`RunContext`) is the harness's side of a run: whether it is the warm-up, the
warm-up step budget of a trainer, the checkpoint object, the work counters (filled by the
method's read-only code through hooks, never by editable code) and the step-indexed,
phase-tagged series.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from harness.core.errors import UserError

Outputs = Mapping[str, Any]  # name -> torch.Tensor | np.ndarray | scipy.sparse | torch sparse


@dataclass(frozen=True)
class SeriesPoint:
    """One value of a per-step series: ``name`` at ``step`` in ``phase`` (e.g. stageA)."""

    name: str
    step: int
    value: float
    phase: str = ""

    @property
    def key(self) -> str:
        """The metric name in MLflow: ``<phase>/<name>`` (or ``<name>`` without a phase)."""
        return f"{self.phase}/{self.name}" if self.phase else self.name


@dataclass
class RunResult:
    """What one run produced: outputs, the work counted by read-only hooks, series."""

    outputs: dict[str, Any]
    work: dict[str, float] = field(default_factory=dict)
    series: list[SeriesPoint] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)  # e.g. samples/s, resumed step

    def series_by_key(self) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for p in self.series:
            out.setdefault(p.key, []).append((p.step, p.value))
        return out


class WorkCounter:
    """Work done during a run, observed by hooks the method's read-only code installs.

    ``watch_optimizers()`` counts every ``torch.optim`` step (a global post-step hook) and
    accumulates the learning rates the optimizers actually used; ``watch_gradients(module)``
    counts the gradients accumulated into ``module``'s trainable parameters (a backward pass
    skipped while ``step()`` is still called shows here); ``watch_parameters(module)`` counts,
    at :meth:`close`, the trainable parameter tensors whose values moved (a frozen one shows);
    ``watch_forward(module)`` counts training-mode forward calls, the samples and the elements
    (tokens) they saw; ``watch_inference(module, name)`` the same of eval-mode calls (posterior
    draws); ``watch_modules(module, cls)`` counts active calls of submodules of a
    type (e.g. dropout in training mode). Hooks are removed by :meth:`close`.

    Only these hooks can count, and only when torch calls them: a count booked from anywhere
    else — editable code that reached the counter, or called a hook itself — is refused and
    marks the counter ``tampered``, and the harness then refuses the run. Editable code is
    handed :meth:`RunContext.view`, which has no counter at all.
    """

    def __init__(self) -> None:
        self._counts: dict[str, float] = {}
        self._handles: list[Any] = []
        self._moved: list[tuple[str, list[Any], list[Any]]] = []
        self.tampered = ""

    @property
    def counts(self) -> dict[str, float]:
        """A copy of the counts (read-only to whoever holds it)."""
        return dict(self._counts)

    def _add(self, name: str, amount: float = 1) -> None:
        frame = sys._getframe(1)
        code = frame.f_code
        if code not in _COUNTING_CODE:
            where = f"{code.co_filename}:{code.co_firstlineno} ({code.co_name})"
            self.tampered = self.tampered or f"work counter {name!r} booked from {where}"
            return
        caller = frame.f_back  # a hook's caller: torch (or none: autograd's device threads)
        if code is not _CLOSE_CODE and caller is not None and not _in_torch(caller.f_code):
            where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
            self.tampered = self.tampered or f"work hook {name!r} called from {where}"
            return
        self._counts[name] = self._counts.get(name, 0) + amount

    def watch_optimizers(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
            self._add("optimizer_steps")
            lrs = [float(g.get("lr", 0.0)) for g in optimizer.param_groups]
            self._add("lr_sum", sum(lrs))

        self._handles.append(register_optimizer_step_post_hook(hook))

    def watch_gradients(self, module: Any, name: str = "grad_accumulations") -> None:
        """Count every gradient accumulated into a trainable parameter of ``module``."""

        def hook(param: Any) -> None:
            self._add(name)

        for p in module.parameters():
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(hook))

    def watch_parameters(self, module: Any, name: str = "params_moved") -> None:
        """At :meth:`close`: ``name`` = the parameter tensors of ``module`` whose values changed
        (a frozen trainable one shows), and ``<name>_of`` = how many were watched."""
        params = list(module.parameters())
        self._moved.append((name, params, [p.detach().clone() for p in params]))

    def watch_forward(self, module: Any, name: str = "samples") -> None:
        """Count training-mode forward calls of ``module``, the rows of their first input and
        its elements (``<name>_elements``: tokens for a sequence model)."""

        def hook(mod: Any, args: tuple[Any, ...]) -> None:
            if mod.training and args and hasattr(args[0], "shape"):
                self._add(f"{name}_forward_calls")
                self._add(name, int(args[0].shape[0]))
                self._add(f"{name}_elements", int(args[0].numel()))

        self._handles.append(module.register_forward_pre_hook(hook))

    def watch_inference(self, module: Any, name: str) -> None:
        """Count the rows and elements of the first input of ``module``'s eval-mode forward
        calls (not the calls: how they are batched is the candidate's to choose): the passes of a posterior or a prediction, which the outputs may not show
        (fewer Monte Carlo draws averaged, say)."""

        def hook(mod: Any, args: tuple[Any, ...]) -> None:
            if not mod.training and args and hasattr(args[0], "shape"):
                self._add(name, int(args[0].shape[0]))  # not the calls: batching is free
                self._add(f"{name}_elements", int(args[0].numel()))

        self._handles.append(module.register_forward_pre_hook(hook))

    def watch_modules(self, module: Any, kind: type, name: str) -> None:
        """Count active calls (training mode) of every submodule of type ``kind``, and their
        configured probability ``p`` summed (dropout), under ``name``."""
        for sub in module.modules():
            if isinstance(sub, kind):

                def hook(mod: Any, args: tuple[Any, ...]) -> None:
                    if mod.training:
                        self._add(name)
                        self._add(f"{name}_p_sum", float(getattr(mod, "p", 0.0)))

                self._handles.append(sub.register_forward_pre_hook(hook))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, params, initial in self._moved:
            moved = sum(
                not bool((p.detach() == p0).all()) for p, p0 in zip(params, initial, strict=True)
            )
            self._add(name, moved)
            self._add(f"{name}_of", len(params))
        self._moved.clear()


def _counting_code() -> frozenset[Any]:
    """The code objects allowed to count: the hooks defined in WorkCounter and its close()."""
    codes = {WorkCounter.close.__code__}
    for fn in vars(WorkCounter).values():
        for const in getattr(getattr(fn, "__code__", None), "co_consts", ()):
            if hasattr(const, "co_code") and const.co_name == "hook":
                codes.add(const)
    return frozenset(codes)


_COUNTING_CODE = _counting_code()
_CLOSE_CODE = WorkCounter.close.__code__


def _in_torch(code: Any) -> bool:
    torch = sys.modules.get("torch")
    root = os.path.dirname(getattr(torch, "__file__", None) or "/nonexistent/")
    return code.co_filename.startswith(root + os.sep)


def _seal_invariants() -> list[str]:
    """Checked by :class:`harness.bench.seal.Seal`: the counting code is this module's own."""
    ok = _counting_code() == _COUNTING_CODE and _CLOSE_CODE is WorkCounter.close.__code__
    return [] if ok else ["harness.bench.contract's counting code was replaced"]


class TrainView:
    """What editable training code sees of the run context: the step budget, the checkpoint,
    ``mark``/``record``, ``plan`` and ``steps_left`` — never the work counters."""

    __slots__ = ("checkpoint", "mark", "max_steps", "plan", "record", "steps_left", "warmup")

    def __init__(self, ctx: RunContext) -> None:
        self.warmup = ctx.warmup
        self.max_steps = ctx.max_steps
        self.checkpoint = ctx.checkpoint
        self.mark = ctx.mark
        self.plan = ctx.plan
        self.record = ctx.record
        self.steps_left = ctx.steps_left


class RunContext:
    """The harness's side of one ``method.run(state, ctx)`` call.

    Attributes:
        warmup: True for the untimed warm-up.
        max_steps: a trainer's step budget for this call (the warm-up's ``bench.warmup_steps``)
            or None (the method's own budget).
        checkpoint: the harness-owned checkpoint (a disabled one in the warm-up).
        work: the work counters (read-only method code installs the hooks).
    """

    def __init__(
        self,
        warmup: bool = False,
        max_steps: int | None = None,
        checkpoint: Any = None,
        synchronize: Callable[[], None] = lambda: None,
        listener: Callable[[str, int, float], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        from harness.bench.checkpoint import Checkpoint
        from harness.bench.progress import EpochProgress

        self.warmup = warmup
        self.max_steps = max_steps
        self.checkpoint = checkpoint if checkpoint is not None else Checkpoint.disabled()
        self.work = WorkCounter()
        self.series: list[SeriesPoint] = []
        self._sync = synchronize
        self._listener = listener  # e.g. a live MLflow run streaming the series
        self._marks: list[float] = []
        self._progress = EpochProgress(say, warmup) if say is not None else None
        self.started = time.perf_counter()

    def record(self, name: str, value: float, step: int, phase: str = "") -> None:
        """A series point (MLflow metric history ``<phase>/<name>``)."""
        point = SeriesPoint(name, int(step), float(value), phase)
        self.series.append(point)
        if self._listener is not None:
            self._listener(point.key, point.step, point.value)

    def mark(self, step: int, phase: str = "", **metrics: float) -> None:
        """End of an epoch (or another unit of training): the harness takes the time (after a
        device sync; checkpoint writes excluded) — these are the samples of ``train`` timing —
        and records ``metrics`` as series points at ``step``."""
        self._sync()
        now = time.perf_counter() - self.checkpoint.seconds
        last = self._marks[-1] if self._marks else self.started
        self._marks.append(now)
        self.record("epoch_s", now - last, step, phase)
        for name, value in metrics.items():
            self.record(name, value, step, phase)
        if self._progress is not None:  # the console line (rate-limited)
            self._progress.epoch(step, phase, now - last, {k: float(v) for k, v in metrics.items()})

    def plan(self, **last_step: int) -> None:
        """The step each phase's last ``mark`` will have (``plan(train=400)``, ``plan(stageA=6,
        stageB=10)``): the console shows ``epoch i/n`` and the time left."""
        if self._progress is not None:
            self._progress.plan(**last_step)

    @property
    def samples(self) -> list[float]:
        """Per-epoch (per mark) seconds, checkpoint writes excluded."""
        edges = [self.started, *self._marks]
        return [b - a for a, b in zip(edges, edges[1:], strict=False)]

    def steps_left(self, step: int) -> bool:
        """False once a step budget (the warm-up's) is used up."""
        return self.max_steps is None or step < self.max_steps

    def view(self) -> TrainView:
        """The part of this context editable code may be handed (no work counters)."""
        return TrainView(self)


@runtime_checkable
class Method(Protocol):
    """The methods every method class implements (checked by :func:`check_method`)."""

    def __init__(self, cfg: Any, runtime: Any) -> None: ...

    def check_inputs(self, data: Mapping[str, Any]) -> None:
        """Validate the dataset's objects; raise ``UserError`` with one line."""

    def prepare(self, data: Mapping[str, Any]) -> Any:
        """Untimed: move data to the device, load cached tables. Returns the run state."""

    def run(self, state: Any, ctx: RunContext) -> RunResult | Outputs:
        """Timed: compute the outputs from the prepared state (a trainer trains)."""

    def compare(self, result: RunResult, reference: Outputs) -> tuple[dict[str, float], bool]:
        """Tolerance tier (read-only code): metrics against a baseline's outputs, pass/fail."""

    def quality(self, result: RunResult, data: Mapping[str, Any]) -> dict[str, float]:
        """Metrics against the dataset's ground truth (read-only code), or ``{}``."""


# the protocol's methods and how many arguments the harness passes each (``self`` aside)
REQUIRED = {
    name: len(inspect.signature(getattr(Method, name)).parameters) - 1
    for name in ("check_inputs", "prepare", "run", "compare", "quality")
}


def check_method(cls: type, name: str) -> None:
    """The method class implements the contract (methods and their arity); one line if not."""
    for attr, n_args in REQUIRED.items():
        fn = getattr(cls, attr, None)
        if not callable(fn):
            raise UserError(f"method {name}: {cls.__qualname__} has no {attr}() (the contract)")
        params = [
            p
            for p in list(inspect.signature(fn).parameters.values())[1:]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(params) != n_args:
            raise UserError(
                f"method {name}: {cls.__qualname__}.{attr} takes {len(params)} argument(s), "
                f"the contract passes {n_args}"
            )


def as_result(value: RunResult | Outputs) -> RunResult:
    """A method's return value as a RunResult (a plain mapping is its outputs)."""
    if isinstance(value, RunResult):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"run() returned {type(value).__name__}; expected RunResult or a mapping")
    return RunResult(outputs=dict(value))
