"""scVI training in process: presets, learning, ground truth, data paths, determinism."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.bench import hardware
from harness.bench.contract import RunContext, RunResult
from harness.bench.hashing import output_hash, select
from harness.bench.protocol import timed_call
from harness.config.compose import compose_checked
from harness.config.validate import locate
from harness.core.errors import UserError
from methods.scvi.method import SCVI, default_max_epochs
from methods.scvi.train import Schedule

TINY = ["dataset.n_cells=600", "dataset.n_genes=120", "method.max_epochs=3", "hardware.threads=1"]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def compose(overrides: list[str]) -> Any:
    return compose_checked(overrides)[1]


def setup(*overrides: str, data: Any = None) -> tuple[SCVI, Any, Any]:
    """(method, data, prepared state) for ``method=scvi dataset=cells/synthetic hardware=cpu``."""
    valid = compose(["method=scvi", "dataset=cells/synthetic", "hardware=cpu", *overrides])
    runtime = hardware.resolve(valid.top.hardware, valid.method.dtype, Path("unused"), 0)
    if data is None:
        data = locate(valid.dataset._target_, "dataset._target_")(valid.dataset)
    method = SCVI(valid.method, runtime)
    method.check_inputs(data)
    return method, data, method.prepare(data)


def train(method: SCVI, state: Any) -> RunResult:
    """One training as the harness runs it: host outputs, work counted by the method's hooks."""
    return timed_call(lambda ctx: method.run(state, ctx), method.runtime, RunContext())[2]


def series(result: RunResult, name: str) -> list[float]:
    return [p.value for p in result.series if p.name == name]


HASHED = ["state.*", "latent"]


def test_census_presets_compose_with_the_effective_architecture() -> None:
    method, _, state = setup("method/preset=census", *TINY, "method.min_genes=0")
    c = method.cfg
    assert (c.n_hidden, c.n_latent, c.n_layers, c.gene_likelihood) == (128, 50, 2, "nb")
    assert (c.batch_size, c.lr, c.n_epochs_kl_warmup, c.max_epochs) == (1024, 1e-4, 20, 3)
    assert c.batch_keys == ["dataset_id", "assay", "suspension_type", "donor_id"]
    model = method.build(state)
    enc, dec = model.encoder.linears, model.decoder.linears
    assert [lin.linear.out_features for lin in enc] == [128, 128]
    assert all(lin.cov is None for lin in enc)  # batch only in the decoder ...
    assert [lin.cov.shape for lin in dec] == [(128, 2), (128, 2)]  # ... at both layers
    assert model.z_head.linear.out_features == 2 * 50
    assert model.px_head.out_features == state.shape.n_genes  # NB: no dropout head
    wide = compose(["method=scvi", "method/preset=census_512"]).method
    assert (wide.n_hidden, wide.n_latent, wide.n_layers) == (512, 50, 2)
    default = compose(["method=scvi"]).method
    assert (default.n_hidden, default.n_latent, default.gene_likelihood) == (128, 10, "zinb")


def test_training_learns_the_ground_truth_and_removes_the_batch_effect() -> None:
    method, data, state = setup(
        "dataset.n_cells=1000",
        "dataset.n_genes=200",
        "dataset.batch_effect=0.8",
        "method.max_epochs=40",
        "method.n_epochs_kl_warmup=10",
        "method.n_eval_cells=300",
        "method.train_size=0.7",
        "hardware.threads=1",
    )
    res = train(method, state)
    elbo = series(res, "elbo_train")
    assert len(elbo) == 40 and elbo[-1] < 0.7 * elbo[0]
    assert all(b < a for a, b in zip(elbo[:10], elbo[1:11], strict=True))
    assert series(res, "kl_weight")[-1] == 1.0
    q = method.quality(res, data)
    assert q["truth_latent_r2"] > 0.8  # linear probe of the true z from the learned latent
    assert q["truth_knn_overlap"] > 0.5
    # k-NN from the other batch, observed/expected: the batch separates the input's PCA
    assert q["batch_mixing_input"] < 0.45 and q["batch_mixing_latent"] > 0.6
    assert q["label_purity_latent"] > 0.7
    assert q["cells_per_s"] > 0


def test_runs_are_deterministic_and_layouts_agree(tmp_path: Path) -> None:
    method, data, state = setup(*TINY, "method.staging=csr")
    a, b = train(method, state), train(method, state)
    names = select(a.outputs, HASHED)
    assert output_hash(a.outputs, 8, names) == output_hash(b.outputs, 8, names)
    assert a.work == b.work and a.work["optimizer_steps"] == 3 * 5  # 540 train cells / 128
    dense, _, dstate = setup(*TINY, "method.staging=dense", data=data)
    c = train(dense, dstate)
    metrics, ok = method.compare(c, a.outputs)
    assert ok and metrics["elbo_rel"] < 1e-5 and metrics["knn_overlap"] > 0.9
    method.write_output(a, data, tmp_path / "latent.h5ad")
    import anndata

    written = anndata.read_h5ad(tmp_path / "latent.h5ad")
    # every cell's latent (the held-out ones are the hashed latent): scvi-tools' convention
    assert written.obsm["X_scVI"].shape == (written.n_obs, a.outputs["latent"].shape[1])
    assert written.n_obs > a.outputs["latent"].shape[0]
    assert list(written.obs_names) == list(data["cells"].obs_names)
    held_out = written.obsm["X_scVI"][state.eval_cells]
    np.testing.assert_allclose(held_out, np.asarray(a.outputs["latent"]), rtol=0, atol=1e-6)


def test_pbmc68k_counts() -> None:
    method, data, state = setup(
        "dataset=cells/pbmc68k",
        "method.max_epochs=2",
        "hardware.threads=1",
        "method.n_eval_cells=100",
    )
    assert state.shape.n_genes == 765 and state.shape.n_batch == 1
    q = method.quality(train(method, state), data)
    assert 0 < q["label_purity_latent"] <= 1 and "truth_latent_r2" not in q


def test_streaming_from_a_backed_file_with_workers(tmp_path: Path) -> None:
    _, data, _ = setup(*TINY)
    path = tmp_path / "cells.h5ad"
    data["cells"].write_h5ad(path)
    method, backed, state = setup(
        "dataset=cells/h5ad",
        f"dataset.path={path}",
        "dataset.backed=true",
        "dataset.batch_keys=[donor_id]",
        "method.max_epochs=2",
        "method.chunk_cells=128",
        "method.workers=1",
        "hardware.threads=1",
    )
    assert state.layout == "stream" and backed["cells"].isbacked
    out = train(method, state).outputs
    assert np.isfinite(out["elbo_heldout"]).all() and out["latent"].shape == (60, 10)
    assert method.last is not None and method.last.cells == 2 * state.n_train


@pytest.mark.parametrize(
    "extra",
    [
        ["method.use_observed_lib_size=false", "method.dispersion=gene-batch"],
        ["method.encode_covariates=true", "method.n_layers=2", "method.gene_likelihood=nb"],
        ["method.n_steps_kl_warmup=5", "method.max_steps=7", "method.staging=stream"],
    ],
)
def test_model_variants_train(extra: list[str]) -> None:
    method, _, state = setup(*TINY, *extra)
    res = train(method, state)
    out = res.outputs
    params = [v for k, v in out.items() if k.startswith("state.")]
    assert all(np.isfinite(p).all() for p in params) and np.isfinite(out["elbo_heldout"]).all()
    if "method.max_steps=7" in extra:
        assert res.work["optimizer_steps"] == 7
        assert series(res, "kl_weight")[-1] == pytest.approx(1.0)


def test_filters_and_input_errors() -> None:
    method, data, state = setup(*TINY, "method.n_top_genes=50", "method.min_genes=30")
    assert state.shape.n_genes == 50 and state.genes.size == 50
    assert (np.diff(data["cells"].X[state.cells].indptr) >= 30).all()
    with pytest.raises(UserError, match=r"method\.batch_keys.*nope"):
        setup(*TINY, "method.batch_keys=[nope]")
    with pytest.raises(UserError, match="train_size"):
        setup("dataset.n_cells=4", "method.train_size=0.1")


def test_epoch_heuristic_and_kl_schedule() -> None:
    assert [default_max_epochs(n) for n in (100, 20000, 40000, 10**7)] == [400, 400, 200, 1]
    by_epoch = Schedule(max_epochs=10, n_epochs_kl_warmup=4)
    assert [by_epoch.kl_weight(e, 0) for e in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    by_step = Schedule(max_epochs=10, n_steps_kl_warmup=100, min_kl_weight=0.2, max_kl_weight=0.6)
    assert by_step.kl_weight(3, 50) == pytest.approx(0.4)
    assert Schedule(max_epochs=1, n_epochs_kl_warmup=None).kl_weight(0, 0) == 1.0
