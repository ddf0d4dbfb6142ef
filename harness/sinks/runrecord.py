"""The one plain record of a run that every sink receives (results.tsv, MLflow, the console).

The runner builds it (``harness.bench.runner.Benchmark.run_record``); sinks read nothing else —
no config objects, no benchmark, no measurement — so they stay below the runner and cannot
reach into it. Four parts: what ran (:class:`Identity`), where to track it (:class:`Tracking`),
what was measured (:class:`Timings`, None when nothing was timed) and how it ended (the
outcome fields of :class:`RunRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Identity:
    """What ran: the task, the code and the machine."""

    method: str
    dataset: str
    hardware: str
    timing: str  # repeat | train
    commit: str
    branch: str
    dirty: bool
    device_name: str
    dtype: str
    overrides: tuple[str, ...]
    started: datetime
    swept: tuple[str, ...] = ()  # the keys a sweep varies (they lead the run's name)
    quality: tuple[str, ...] = ()  # the method's headline quality metrics (schema QUALITY)
    sweep_id: str = ""
    tag: str = ""  # run.tag
    description: str = ""  # run.description


@dataclass(frozen=True)
class Tracking:
    """Where MLflow runs go (``tracking.*``) and where results.tsv lives."""

    enabled: bool
    uri: str  # resolved: tracking.uri, $MLFLOW_TRACKING_URI or the sqlite file in results
    experiment: str
    live_interval_s: float
    results: Path


@dataclass(frozen=True)
class Timings:
    """The protocol's figures (``harness.bench.protocol.Measurement``), summarised."""

    timing: str
    elapsed: tuple[float, ...]  # timed runs (train: one)
    median: float
    min: float
    iqr: float
    n_samples: int  # repeat: timed runs; train: epochs
    warmup_s: tuple[float, ...]
    peak_mem_mb: float
    resumed: str = ""  # "epoch/batch/step" a resumed training started at
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class RunRecord:
    """Identity, environment, timings and outcome of one run (module doc)."""

    identity: Identity
    tracking: Tracking
    environment: dict[str, Any]  # the fingerprint (harness.bench.fingerprint)
    config: dict[str, Any]  # the resolved config
    config_yaml: str
    log: str  # the console log of the run
    status: str  # run | baseline | crash | timeout | killed | running
    finished: datetime | None = None
    timings: Timings | None = None
    output_hash: str = ""
    verdict: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    error: str = ""
    mlflow_run_id: str = ""
    mlflow_url: str = ""  # the run's experiment in MLflow's training view (sinks.mlflow_view)
