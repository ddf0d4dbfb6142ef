"""How an experiment opens in MLflow's UI: the model-training view, its runs table showing the
figures of record.

MLflow 3.17's UI does not choose the view per experiment: its GenAI / Model-training switch is
always on, and the view comes from the URL (``?workflowType=machine_learning``), else from the
browser's local storage (``mlflow.workflowType``), default GenAI; the experiment tag
``mlflow.experimentKind`` is read only where the switch is off (older 3.x). The runs table's
columns come from a saved view: a shared view is an experiment tag
``mlflow.sharedViewState.<key>`` holding the table state as JSON, opened with
``?viewStateShareKey=<key>``. So each experiment carries the shared view :data:`VIEW_KEY`
(elapsed_s, the method's headline quality metrics, verdict, status; newest first), and the link
:func:`training_view_url` opens both; the console prints it after every run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from harness.sinks.mlflow_names import mlflow_key

VIEW_KEY = "harness"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
LOCAL_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves by default


def view_state(headline: Sequence[str]) -> str:
    """The runs table's state (MLflow's ``selectedColumns`` keys: ``metrics.`name```)."""
    columns = [
        "metrics.`elapsed_s`",
        *(f"metrics.`{mlflow_key(name)}`" for name in headline),
        "tags.`verdict`",
        "tags.`status`",
    ]
    state = {
        "selectedColumns": list(dict.fromkeys(columns)),
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }
    return json.dumps(state, sort_keys=True)


def ensure_view(
    client: Any, experiment_id: str, tags: dict[str, str], headline: Sequence[str]
) -> None:
    """Tag the experiment with the harness's shared view (once per headline; best effort)."""
    from mlflow.exceptions import MlflowException

    state = view_state(headline)
    if tags.get(VIEW_TAG) != state:
        with contextlib.suppress(MlflowException):
            client.set_experiment_tag(experiment_id, VIEW_TAG, state)


def training_view_url(uri: str, experiment_id: str) -> str:
    """The link that opens ``experiment_id``'s runs table in the model-training view with the
    harness's columns (a local ``mlflow ui`` for a file or database store)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"
