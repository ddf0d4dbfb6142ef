"""MLflow sink: one run per benchmark. mlflow is imported only here, only when enabled.

A run is created with the benchmark's real start time (so the UI's Duration is the wall time)
and finished with its end time. Trainers open their run when training starts (status RUNNING)
and stream the per-epoch series as they happen (:class:`LiveRun`: buffered, flushed by a
background thread every few seconds, so logging never sits in the timed region); the run ends
FINISHED, FAILED (a crash, or its logging failed: the series so far and the log kept) or
KILLED (a timeout, SIGINT/SIGTERM). Runs a SIGKILLed process left RUNNING are ended FAILED by
the next run on the host (:mod:`harness.sinks.orphans`). Every metric, param and tag key goes
through :func:`harness.sinks.mlflow_names.mlflow_key` (``recall@1`` → ``recall_at_1``).
Experiments are created as model-training experiments (``mlflow.experimentKind``) and carry
the harness's saved runs-table view (:mod:`harness.sinks.mlflow_view`: the link the console
prints opens the model-training view with elapsed_s, the headline quality, verdict, status).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.sinks.mlflow_names import mlflow_keys

_MAX_PARAM_LEN = 6000
_BATCH = 100  # MLflow's log_batch limit for params and tags
_METRIC_BATCH = 1000  # ... and for metrics
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

# Before mlflow is first imported: MLflow 3's telemetry reports usage over the network (none
# here) from a thread that sets and unsets an environment variable while requests read
# os.environ — a KeyError '_MLFLOW_TELEMETRY_SESSION_ID' failed runs/create on a tracking
# server (benchmarks/team.py). No telemetry from a benchmark harness.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts → ``{"a.b.c": "value"}``; lists as JSON; values capped to MLflow's limit."""
    flat: dict[str, str] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    value = json.dumps(tree) if isinstance(tree, (list, tuple)) else str(tree)
    flat[prefix.rstrip(".")] = value[:_MAX_PARAM_LEN]
    return flat


def default_uri(results_dir: Path) -> str:
    """``sqlite:///<absolute results dir>/mlflow.db``."""
    return f"sqlite:///{results_dir.resolve()}/mlflow.db"


def _client(uri: str) -> Any:
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # table-creation chatter on a new database
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(
    client: Any, name: str, artifact_root: Path | None, headline: Sequence[str] = ()
) -> str:
    from mlflow.exceptions import MlflowException

    from harness.sinks.mlflow_view import ensure_view

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (artifact_root / name).resolve().as_uri() if artifact_root else None
        try:
            exp_id = client.create_experiment(
                name, artifact_location=location, tags=dict([EXPERIMENT_KIND])
            )
            ensure_view(client, exp_id, {}, headline)
            return exp_id
        except MlflowException:  # another job created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND[0]) is None:
        with contextlib.suppress(MlflowException):
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    ensure_view(client, exp.experiment_id, exp.tags, headline)
    return exp.experiment_id


def _metric_list(
    metrics: Mapping[str, float], series: Mapping[str, list[tuple[int, float]]], now: int
) -> list[Any]:
    from mlflow.entities import Metric

    key = mlflow_keys([*metrics, *series])
    out = [Metric(key[k], float(v), now, 0) for k, v in metrics.items() if v is not None and v == v]
    out += [
        Metric(key[k], float(v), now, int(step))
        for k, points in series.items()
        for step, v in points
        if v is not None and v == v
    ]
    return out


def _tags(tags: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    key = mlflow_keys(tags)
    return [RunTag(key[k], str(v)[:5000]) for k, v in tags.items()]


def open_run(
    uri: str, experiment: str, run_name: str, start_ms: int, artifact_root: Path | None,
    tags: Mapping[str, Any] | None = None, headline: Sequence[str] = (),
) -> str:  # fmt: skip
    """Create a RUNNING run started at ``start_ms``, tagged with this process (``host``,
    ``pid``); returns its id. First ends the runs killed processes left RUNNING (orphans.reap).
    ``headline``: the method's quality metrics, columns of the experiment's runs view.
    """
    from harness.sinks.orphans import process_tags, reap

    client = _client(uri)
    reap(client, uri)
    exp_id = _experiment_id(client, experiment, artifact_root, headline)
    run = client.create_run(exp_id, run_name=run_name, start_time=start_ms)
    client.log_batch(run.info.run_id, tags=_tags({**process_tags(), **(tags or {})}))
    return run.info.run_id


def fail_run(uri: str, run_id: str, error: str) -> None:
    """End ``run_id`` as FAILED with ``error`` as a tag (best effort: the store may be gone)."""
    with contextlib.suppress(Exception):
        client = _client(uri)
        client.set_tag(run_id, "error", error[:5000])
        client.set_terminated(run_id, status="FAILED", end_time=int(time.time() * 1000))


def log_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    series: Mapping[str, list[tuple[int, float]]],
    texts: Mapping[str, str],
    status: str,
    artifact_root: Path | None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    run_id: str | None = None,
    headline: Sequence[str] = (),
) -> str:
    """Log a benchmark into a run (a new one, or ``run_id`` opened live) and finish it.

    ``series`` are per-step metrics as (step, value) pairs (e.g. per-epoch ELBO); ``texts`` are
    small artifacts (resolved config, run log); ``status`` is FINISHED, FAILED or KILLED.
    """
    from mlflow.entities import Param

    client = _client(uri)
    if run_id is None:
        run_id = open_run(uri, experiment, run_name, start_ms or int(time.time() * 1000),
                          artifact_root, headline=headline)  # fmt: skip
    try:
        now = int(time.time() * 1000)
        metric_list = _metric_list(metrics, series, now)
        param_key = mlflow_keys(params)
        param_list = [Param(param_key[k], v) for k, v in params.items()]
        tag_list = _tags(tags)
        for i in range(0, max(len(param_list), len(tag_list), 1), _BATCH):
            client.log_batch(
                run_id, params=param_list[i : i + _BATCH], tags=tag_list[i : i + _BATCH]
            )
        for i in range(0, len(metric_list), _METRIC_BATCH):
            client.log_batch(run_id, metrics=metric_list[i : i + _METRIC_BATCH])
        for name, text in texts.items():
            client.log_text(run_id, text, name)
        client.set_terminated(run_id, status=status, end_time=end_ms or now)
    except BaseException as exc:  # a run whose logging failed is FAILED, never left RUNNING
        fail_run(uri, run_id, f"logging failed: {type(exc).__name__}: {exc}")
        raise
    return run_id


class LiveRun:
    """A trainer's run, open while it trains: series points are buffered and flushed to MLflow
    by a background thread every ``interval_s`` (and once at the end)."""

    def __init__(self, uri: str, run_id: str, interval_s: float, lock: Callable[[], Any]) -> None:
        self.uri, self.run_id, self.interval_s, self.lock = uri, run_id, interval_s, lock
        self._points: list[tuple[str, int, float]] = []
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors = 0
        self._thread.start()

    def add(self, key: str, step: int, value: float) -> None:
        with self._guard:
            self._points.append((key, int(step), float(value)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        with self._guard:
            points, self._points = self._points, []
        if not points:
            return
        try:
            series: dict[str, list[tuple[int, float]]] = {}
            for key, step, value in points:
                series.setdefault(key, []).append((step, value))
            with self.lock():
                client = _client(self.uri)
                metrics = _metric_list({}, series, int(time.time() * 1000))
                for i in range(0, len(metrics), _METRIC_BATCH):
                    client.log_batch(self.run_id, metrics=metrics[i : i + _METRIC_BATCH])
        except Exception:  # live logging is best effort: the final record still logs all
            self.errors += 1
            with self._guard:
                self._points = points + self._points

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
