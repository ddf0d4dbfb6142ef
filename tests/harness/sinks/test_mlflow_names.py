"""The one MLflow key sanitiser: every name becomes a key MLflow's own validators accept."""

from __future__ import annotations

import pytest

from harness.sinks.mlflow_names import MAX_KEY_LEN, mlflow_key, mlflow_keys

NASTY = [
    "recall_text_to_cell@1",
    "recall_cell_to_text@10",
    "top-1 acc (%)",
    "a//b",
    "/leading",
    "trailing/",
    "./dot",
    "..",
    "a/../b",
    "",
    "x" * 400,
    "tab\there",
    "ünïcode",
    "stageA/loss@k=5",
]


def _mlflow_accepts(key: str) -> bool:
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    return bool(validate_param_and_metric_name(key)) and not path_not_unique(key)


@pytest.mark.parametrize("raw", NASTY)
def test_every_key_is_valid_for_mlflow(raw: str) -> None:
    pytest.importorskip("mlflow")
    key = mlflow_key(raw)
    assert _mlflow_accepts(key), (raw, key)
    assert 0 < len(key) <= MAX_KEY_LEN
    assert mlflow_key(key) == key  # idempotent


def test_readable_mapping_and_valid_names_unchanged() -> None:
    assert mlflow_key("recall_text_to_cell@1") == "recall_text_to_cell_at_1"
    assert mlflow_key("a//b/./c") == "a/b/c"
    for ok in ("elapsed_s", "train/elbo", "env.torch", "stageA/epoch_s", "cmp_max abs:dw"):
        assert mlflow_key(ok) == ok


def test_names_that_meet_on_one_key_stay_apart() -> None:
    keys = mlflow_keys(["a@1", "a_at_1", "b", "a#1", "a$1"])
    assert keys["a_at_1"] == "a_at_1" and keys["b"] == "b"  # valid names keep their key
    assert len(set(keys.values())) == 5
    assert all(mlflow_key(k) == k for k in keys.values())
    assert mlflow_keys(["a@1", "a_at_1"]) == mlflow_keys(["a_at_1", "a@1"])  # order-free
    long = ["y" * 300 + "1", "y" * 300 + "2"]
    assert len(set(mlflow_keys(long).values())) == 2


def test_a_method_metric_with_at_is_logged(tmp_path) -> None:
    """Through the real sink into a real store: the run is FINISHED with the metric."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from harness.sinks.mlflow_run import log_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = log_run(
        uri, "names", "r", params={"method.k@2": "3"}, metrics={"recall@1": 0.5},
        tags={"odd tag@": "x"}, series={"train/loss@b": [(0, 1.0), (1, 0.5)]}, texts={},
        status="FINISHED", artifact_root=tmp_path / "art",
    )  # fmt: skip
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["recall_at_1"] == 0.5 and run.data.metrics["train/loss_at_b"] == 0.5
    assert run.data.params["method.k_at_2"] == "3" and run.data.tags["odd tag_at_"] == "x"
