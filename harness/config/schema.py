"""Config schema: structured configs for the harness keys, base classes for methods/datasets.

Types and unknown keys are enforced by OmegaConf (struct mode); value ranges are declared in
field metadata (``ge``, ``gt``, ``le``, ``lt``, ``choices``) and checked by :func:`check_ranges`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from harness.core.errors import UserError


def rng(**bounds: Any) -> dict[str, Any]:
    """Field metadata declaring a range, e.g. ``field(default=1, metadata=rng(ge=1))``.

    ``words`` lists the words a ``str`` field accepts besides integers (``batch_size=auto``).
    ``task=False`` marks an execution-only key (a data-path or logging knob that cannot change
    the outputs): it stays out of the task identity that keys baselines and checkpoints.
    """
    return bounds


# The dataset roles: what a dataset yields / what a method needs. A role's datasets live in
# conf/dataset/<group>/; a new role is a new entry in both tables (README "Adding a method").
ROLE_GROUPS: dict[str, str] = {
    "spatial+reference": "spatial",
    "cells": "cells",
    "cells+labels": "labelled",
    "droplets": "droplets",
    "cells+captions": "captioned",
}
# The keys of the dict a role's loader returns (each an AnnData); what each must hold is in
# the README's table and the loaders' docstrings (tests/harness/bench/test_contract.py loads every role).
ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "spatial+reference": ("spatial", "reference"),
    "cells": ("cells",),
    "cells+labels": ("cells",),
    "droplets": ("droplets",),
    "cells+captions": ("cells",),
}
TIMINGS = ("repeat", "train")
DETERMINISMS = ("bitwise", "statistical")
AUTOCASTS = ("bf16", "fp16")


@dataclass
class MethodConfig:
    """Keys every method config has; a method's schema subclasses this.

    The class attributes in capitals are the method's contract declarations. They live in the
    method's read-only schema module, so neither the command line nor an edited YAML file can
    change them:

    - ``ROLE``: the dataset role the method needs (a key of ``ROLE_GROUPS``);
    - ``TIMING``: ``repeat`` (solvers: W warm-ups, R timed runs) or ``train`` (trainers: a
      warm-up of ``bench.warmup_steps`` steps, then ONE timed training whose per-epoch times
      are the samples);
    - ``DETERMINISM``: ``bitwise`` (runs must hash equal) or ``statistical`` (the tolerance
      tier decides; hashes are still recorded);
    - ``AUTOCAST``: the autocast precisions the method supports (``bf16``, ``fp16``);
    - ``QUALITY``: its headline quality metrics in order of preference (the first that
      ``quality()`` returns is the run's ``quality`` in results.tsv, sweep tables and reports).
    """

    ROLE: ClassVar[str] = ""
    TIMING: ClassVar[str] = "repeat"
    DETERMINISM: ClassVar[str] = "bitwise"
    AUTOCAST: ClassVar[tuple[str, ...]] = ()
    QUALITY: ClassVar[tuple[str, ...]] = ()

    name: str = MISSING
    _target_: str = MISSING
    _schema_: str = MISSING
    dtype: str = field(default="float32", metadata=rng(choices=["float32", "float64"], task=False))
    # bf16 / fp16 autocast for this method (null: the hardware profile's choice)
    autocast: str | None = field(default=None, metadata=rng(choices=list(AUTOCASTS), task=False))
    # files (relative to the repo root) the optimization loop may change / must not change
    editable: list[str] = field(default_factory=list)
    readonly: list[str] = field(default_factory=list)
    # which outputs go into the output hash (empty: all)
    hashed_outputs: list[str] = field(default_factory=list)
    # output hashed with the legacy md5(round(x, d)) recipe for parity with a peer tool
    parity_output: str | None = None
    # Optuna search space: name -> spec (used by harness.tune); these keys are not the task
    search_space: dict[str, Any] = field(default_factory=dict)


# MethodConfig keys that are the harness's metadata, never part of the task identity.
METHOD_METADATA = (
    "name", "_target_", "_schema_", "editable", "readonly", "hashed_outputs", "parity_output",
    "search_space", "tol",
)  # fmt: skip


@dataclass
class DatasetConfig:
    """Keys every dataset config has; a dataset's schema subclasses this.

    ``ROLE`` (class attribute) is the role of what the loader yields. ``draw(k)`` returns the
    config of a fresh input of the same kind (the optimization loop times every run on an
    input it has not seen); the default replaces a ``seed`` field, datasets without one say
    how they resample by overriding it (or return None: no fresh inputs). ``check(k)`` is the
    loop's held-out check input: another seed and, where ``SIZE_KEY`` names the size field,
    half the size.
    """

    ROLE: ClassVar[str] = ""
    SIZE_KEY: ClassVar[str | None] = None

    name: str = MISSING
    _target_: str = MISSING
    _schema_: str = MISSING

    def draw(self, k: int) -> DatasetConfig | None:
        """A fresh input: this config with its seed replaced by ``k`` (None without a seed)."""
        if not hasattr(self, "seed"):
            return None
        return dataclasses.replace(self, seed=int(k))  # type: ignore[call-arg]

    def check(self, k: int) -> DatasetConfig | None:
        """The held-out check input: ``draw(k)`` at half the size (``SIZE_KEY``)."""
        fresh = self.draw(k)
        if fresh is None or not self.SIZE_KEY:
            return fresh
        size = getattr(self, self.SIZE_KEY)
        return dataclasses.replace(fresh, **{self.SIZE_KEY: max(type(size)(size // 2), 8)})


@dataclass
class BenchConfig:
    warmup: int = field(default=1, metadata=rng(ge=1))  # repeat timing: untimed runs first
    repeats: int = field(default=3, metadata=rng(ge=1))  # repeat timing: timed runs
    # the warm-up runs on another draw of the dataset (seed + 1000003) where it can draw one, so
    # a cache the warm-up fills (keyed on the input) cannot serve the timed runs
    warmup_own_input: bool = True
    warmup_steps: int = field(default=5, metadata=rng(ge=1))  # train timing: warm-up steps
    timeout_s: float = field(default=3600.0, metadata=rng(gt=0))
    hash_decimals: int = field(default=8, metadata=rng(ge=0, le=15))
    # auto: compare with the stored baseline, or store this run when there is none
    baseline: str = field(default="auto", metadata=rng(choices=["auto", "compare", "save", "off"]))
    seed: int = 0


@dataclass
class HardwareConfig:
    name: str = MISSING
    device: str = field(default="auto", metadata=rng(choices=["auto", "cpu", "cuda"]))
    # auto: the method's own default dtype
    dtype: str = field(default="auto", metadata=rng(choices=["auto", "float32", "float64"]))
    # autocast precision for methods that support it (null: none)
    autocast: str | None = field(default=None, metadata=rng(choices=list(AUTOCASTS)))
    compile: bool = False
    tf32: bool = False
    # every thread pool's size (torch, BLAS/OpenMP, numba); 0: the CPUs this process may use
    # (affinity and cgroup quota: what taskset/SLURM gave it), harness.bench.threads
    threads: int = field(default=0, metadata=rng(ge=0))
    # regex the CUDA device name must match (None: any)
    gpu_pattern: str | None = None


@dataclass
class PathsConfig:
    results: str = "results"
    cache: str = "${paths.results}/cache"
    baselines: str = "${paths.results}/baselines"
    checkpoints: str = "${paths.results}/checkpoints"


@dataclass
class TrackingConfig:
    mlflow: bool = True
    # None: sqlite:///<paths.results>/mlflow.db (absolute); MLFLOW_TRACKING_URI wins over None
    uri: str | None = None
    experiment: str | None = None  # None: the method name
    # trainers stream their per-epoch series to a RUNNING MLflow run every this many seconds
    live_interval_s: float = field(default=10.0, metadata=rng(gt=0))


@dataclass
class CheckpointConfig:
    """Harness-owned checkpoints of trainers (``train`` timing): tensors and plain values only,
    under ``<paths.results>/checkpoints``, keyed by task and code version."""

    enabled: bool = False
    every_epochs: int | None = field(default=1, metadata=rng(ge=1))
    every_steps: int | None = field(default=None, metadata=rng(ge=1))
    every_minutes: float | None = field(default=None, metadata=rng(gt=0))
    keep: bool = False  # keep the final checkpoint after a completed run (posterior-only reuse)


@dataclass
class CorrectnessConfig:
    accept: list[str] = field(default_factory=lambda: ["exact", "close"])


@dataclass
class RunConfig:
    description: str = ""
    status: str = field(default="run", metadata=rng(choices=["run", "baseline", "keep", "discard"]))
    tag: str = ""
    output: str | None = None


@dataclass
class LaunchConfig:
    """How A/B workers are started (what measurably shrinks per-process bias here; see
    benchmarks/process_bias.py)."""

    # Measured on the 2-core CI-like VM (benchmarks/process_bias.py, RCTD 1000 px, 8 processes
    # x 8 fresh inputs; sd of per-process biases, wall): torch's default 2 threads 6.7%, one
    # thread 2.8%, + CPU pinning 5.0%, + ASLR off 1.6%, + fixed malloc 3.8% (and 15% faster
    # runs: no mmap/munmap churn of large temporaries), all three 2.8%. Kept: one thread, ASLR
    # off, fixed malloc. Run-to-run noise (~8% per 1 s run) dominated every variant.
    pin: bool = False  # taskset every worker to one CPU (cpu)
    cpu: int = field(default=-1, metadata=rng(ge=-1))  # the CPU to pin to (-1: the last one)
    no_aslr: bool = True  # setarch -R: the same address-space layout in every process
    malloc: bool = True  # one malloc arena, fixed mmap/trim thresholds
    threads: int = field(default=1, metadata=rng(ge=0))  # hardware.threads of workers (0: keep)
    # workers forked from one pre-imported template per side and try (harness/optimize/
    # template.py) instead of started afresh: start-up paid once per commit and side; both
    # sides forked alike (the keeper's warm workers unused), as forked workers run 12-21%
    # slower than fresh ones here (benchmarks/process_bias.py, template.py's docstring). Off:
    # a template's workers share its bias (A/A false keeps 3.6% with it, 0.0% without)
    fork: bool = False
    # workers in a mount namespace where the Python installation, the repository (checkouts,
    # results, .git) and the loop's files are read-only, but for their scratch and the cache
    # (harness/optimize/sandbox.py; needs root and util-linux, else off with a note)
    sandbox: bool = True


@dataclass
class DecisionConfig:
    """The sequential A/B rule (harness/optimize/decide.py)."""

    # keep only when the gain exceeds min_gain with confidence 1 - alpha
    min_gain: float = field(default=0.01, metadata=rng(ge=0, lt=1))
    alpha: float = field(default=0.01, metadata=rng(gt=0, lt=0.5))  # false keeps
    interim_alpha: float = field(default=0.001, metadata=rng(gt=0, lt=0.5))  # per early look
    # futility: discard once the gain is below `detect` with confidence 1 - beta
    detect: float = field(default=0.04, metadata=rng(ge=0, lt=1))
    beta: float = field(default=0.1, metadata=rng(gt=0, lt=0.5))
    rounds: int = field(default=4, metadata=rng(ge=1))  # fresh inputs per worker pair
    # one untimed run of both workers, on an input of its own, before each pair's timed rounds:
    # a fresh worker's first full run is slower than a warm one's, and the loop's kept workers
    # stay warm across tries while every candidate is new (measured, scVI 40 epochs on the
    # 2-core VM: an A/A try without it came out -4.2% [-18.7%, +8.6%] over 7 pairs, and three
    # more unchanged-speed tries -5% to -13%). Its own input: warming on the first round's input
    # let a memo keyed on the input bytes through (tests/loop/test_loop.py, planted cheats)
    warm_round: bool = True
    min_pairs: int = field(default=2, metadata=rng(ge=1))
    max_pairs: int = field(default=16, metadata=rng(ge=1))
    max_seconds: float = field(default=600.0, metadata=rng(gt=0))
    # floor of the between-pair sd of mean log ratios, calibrated on this kind of machine:
    # 5.6% over 60 real A/A pairs of 4 rounds (RCTD 1000 px, ~1 s runs, the 2-core CI VM;
    # benchmarks/loop_power.py collect + analyse)
    pair_sd: float = field(default=0.05, metadata=rng(gt=0))
    max_slowdown: float = field(default=0.01, metadata=rng(ge=0, lt=1))  # the neutral route
    # wall: round-trip time measured by the judge (CUDA-synchronised by the worker); cpu: the
    # kernel's CPU time of the worker. Measured here: CPU time = wall time ± 0.3%, with the same
    # run-to-run noise, so wall (which also sees waiting and parallelism) is the default.
    clock: str = field(default="wall", metadata=rng(choices=["wall", "cpu"]))
    # a timed round in which either side's threads waited runnable for a CPU longer than this
    # share of its wall time (the kernel's run-queue wait: a busy neighbour took the CPU) is run
    # again on a fresh input and not counted, at most max_reruns times per pair (the decision
    # line says how many); 1 turns it off
    disturbed: float = field(default=0.1, metadata=rng(gt=0, le=1))
    max_reruns: int = field(default=4, metadata=rng(ge=0))
    launch: LaunchConfig = field(default_factory=LaunchConfig)


@dataclass
class LoopConfig(DecisionConfig):
    """``python -m harness.loop``: the decision rule plus the loop's own settings."""

    tag: str = ""
    description: str = ""
    warm_kept: bool = True  # keep the kept commit's workers alive across tries
    # the warm workers' resident memory, at most (0: half the memory available when the keeper
    # starts); least recently used workers are closed to stay within it (and within half the
    # device's memory on CUDA)
    warm_memory_gb: float = field(default=0.0, metadata=rng(ge=0))


@dataclass
class TuneConfig:
    """``python -m harness.tune``: an Optuna study over the method's search space."""

    study: str | None = None  # None: <method>-<dataset>-<hardware>
    storage: str | None = None  # None: sqlite:///<paths.results>/optuna.db
    n_trials: int = field(default=20, metadata=rng(ge=1))  # the TOTAL, resumed studies included
    seed: int = 0
    write: bool = True  # write conf/tuned/<method>/<hardware>.yaml with the best parameters


@dataclass
class CompareConfig(DecisionConfig):
    """``python -m harness.compare A B``: A/B timing of two commits by the same sequential
    rule; exit 1 when B is credibly slower than A by more than ``threshold``."""

    threshold: float = field(default=0.05, metadata=rng(ge=0))


@dataclass
class Config:
    method: Any = MISSING
    dataset: Any = MISSING
    hardware: HardwareConfig = MISSING
    bench: BenchConfig = field(default_factory=BenchConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    correctness: CorrectnessConfig = field(default_factory=CorrectnessConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


_VERDICTS = ("exact", "close", "wrong", "none", "nondeterministic")


def register() -> None:
    """Register the schema with Hydra's ConfigStore (``defaults: [base_config]``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Check range metadata on a dataclass instance (recursively); raise UserError naming the key."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        meta = f.metadata
        if dataclasses.is_dataclass(value):
            check_ranges(value, key + ".")
            continue
        if value is None or not meta:
            continue
        words = meta.get("words", ())
        if value in words:  # e.g. batch_size=auto beside integers
            continue
        if words and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise UserError(
                    f"config {key}={value!r}: must be an integer or one of {list(words)}"
                ) from None
        if "choices" in meta and value not in meta["choices"]:
            raise UserError(f"config {key}={value!r}: must be one of {list(meta['choices'])}")
        for op, test, word in (
            ("ge", lambda v, b: v >= b, ">="),
            ("gt", lambda v, b: v > b, ">"),
            ("le", lambda v, b: v <= b, "<="),
            ("lt", lambda v, b: v < b, "<"),
        ):
            if op in meta and not test(value, meta[op]):
                raise UserError(f"config {key}={value!r}: must be {word} {meta[op]}")


def check_accept(accept: list[str]) -> None:
    """``correctness.accept`` may only name verdict tiers."""
    bad = [a for a in accept if a not in _VERDICTS]
    if bad:
        raise UserError(f"config correctness.accept: unknown verdict(s) {bad}; use {_VERDICTS[:3]}")
