"""``run.output=<file.h5ad>`` of every method at its TINY size, read back with scanpy: every input
cell (and gene) is there, with the content README "Methods" documents per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.harness.bench.test_contract import TINY, _harness, _methods

BASE = ["hardware=cpu", "hardware.threads=1", "tracking.mlflow=false"]


def _check_rctd(out) -> None:
    names = list(out.uns["rctd"]["cell_type_names"])
    w = out.obsm["rctd_weights"]
    assert isinstance(w, pd.DataFrame) and list(w.columns) == names and len(names) == 3
    kept = out.obs["rctd_kept"].to_numpy()
    assert kept.any() and not np.isnan(w.to_numpy()[kept]).any()
    assert list(out.obsm["rctd_weights_norm"].columns) == names
    assert out.obs["rctd_first_type"].cat.categories.tolist() == names


def _check_scvi(out) -> None:
    assert out.shape == (300, 60) and out.var["scvi_used"].all()
    latent = out.obsm["X_scVI"]
    assert latent.shape == (300, 10) and np.isfinite(latent).all()
    split = out.obs["scvi_split"].value_counts()
    assert split["train"] == 270 and split["validation"] == 30 and split["filtered"] == 0
    assert out.uns["scvi"]["n_latent"] == 10


def _check_cellbender(out) -> None:
    assert out.n_obs == 600 and out.n_vars == 80
    assert {"truth_cell", "truth_epsilon", "truth_cell_type"} <= set(out.obs.columns)
    assert not {"cell", "epsilon", "cell_type", "efficiency"} & set(out.obs.columns)
    assert {"cell_probability", "cell_size", "droplet_efficiency", "background_fraction"} <= set(
        out.obs.columns
    )
    assert "chi_ambient" in out.uns["truth"] and out.uns["learning_curve_train_elbo"].size == 2
    assert out.layers["raw"].shape == out.X.shape


def _check_scbert(out) -> None:
    classes = list(out.uns["scbert_classes"])
    assert set(out.obs["split"]) == {"train", "val", "test"}
    probs = out.obsm["scbert_probs"]
    assert isinstance(probs, pd.DataFrame) and list(probs.columns) == classes
    np.testing.assert_allclose(probs.to_numpy().sum(1), 1.0, atol=1e-4)
    pred = out.obs["scbert_prediction"]
    assert pred.notna().all() and set(pred.cat.categories) == set(classes)
    assert (pred.astype(str).to_numpy() == np.array(classes)[probs.to_numpy().argmax(1)]).all()


def _check_cellwhisperer(out) -> None:
    assert out.n_obs == 300 and set(out.obs["split"]) == {"train", "val", "test"}
    emb = out.obsm["X_cellwhisperer"]
    assert emb.shape == (300, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    scores = out.obsm["prompt_scores"]
    assert list(scores.columns) == list(out.uns["prompt_labels"])
    assert out.obs["predicted_label"].notna().all()
    assert out.obsm["X_cellwhisperer_caption"].shape == (300, 64)


CHECKS = {
    "rctd": _check_rctd,
    "scvi": _check_scvi,
    "cellbender": _check_cellbender,
    "scbert": _check_scbert,
    "cellwhisperer": _check_cellwhisperer,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", _methods())
def test_output_covers_every_cell_and_opens_in_scanpy(tmp_path: Path, name: str) -> None:
    assert name in CHECKS, f"add an output check for method {name}"
    sc = pytest.importorskip("scanpy")
    proc = _harness(tmp_path, f"method={name}", *BASE, *TINY[name], "run.output=out/res.h5ad")
    assert proc.returncode == 0, proc.stderr
    out = sc.read_h5ad(tmp_path / "out" / "res.h5ad")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "res.h5ad"]  # no leftovers
    CHECKS[name](out)
