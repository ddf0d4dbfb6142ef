"""MLflow sink: one run per benchmark. mlflow is imported only here, only when enabled."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_MAX_PARAM_LEN = 6000
_BATCH = 100  # MLflow's log_batch limit for params and tags
_METRIC_BATCH = 1000  # ... and for metrics


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


def _experiment_id(client: Any, name: str, artifact_root: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (artifact_root / name).resolve().as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another job created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


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
) -> str:
    """Create a finished MLflow run in one go and return its id.

    ``series`` are per-step metrics as (step, value) pairs (e.g. per-epoch ELBO); ``texts`` are small
    artifacts (resolved config, run log); ``status`` is FINISHED, FAILED or KILLED.
    """
    import logging

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # table-creation chatter on a new database
        logging.getLogger(name).setLevel(logging.WARNING)

    client = MlflowClient(tracking_uri=uri)
    exp_id = _experiment_id(client, experiment, artifact_root)
    run = client.create_run(exp_id, run_name=run_name)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metric_list = [
        Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and v == v
    ]
    metric_list += [
        Metric(k, float(v), now, int(step))
        for k, points in series.items()
        for step, v in points
        if v is not None and v == v
    ]
    param_list = [Param(k[:250], v) for k, v in params.items()]
    tag_list = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
    for i in range(0, max(len(param_list), len(tag_list), 1), _BATCH):
        client.log_batch(run_id, params=param_list[i : i + _BATCH], tags=tag_list[i : i + _BATCH])
    for i in range(0, len(metric_list), _METRIC_BATCH):
        client.log_batch(run_id, metrics=metric_list[i : i + _METRIC_BATCH])
    for name, text in texts.items():
        client.log_text(run_id, text, name)
    client.set_terminated(run_id, status=status)
    return run_id
