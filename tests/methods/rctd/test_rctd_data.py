"""RCTD dataset layer: loaders, YAML configs and the one-line input errors."""

from __future__ import annotations

import importlib
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from omegaconf import OmegaConf

from harness.config.schema import check_ranges
from harness.core.errors import UserError
from harness.data.counts import counts_matrix, pbmc68k_counts, pbmc68k_path, read_h5ad
from methods.rctd.data import (
    H5adConfig,
    PBMCConfig,
    SyntheticConfig,
    pbmc68k,
    synthetic,
    user_h5ad,
    validate_rctd_inputs,
)

CONF = Path(__file__).resolve().parents[3] / "conf" / "dataset"
SMALL = {"n_pixels": 300, "n_genes": 200, "n_types": 5, "ref_cells_per_type": 25}


def _locate(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _load(name: str, **overrides):
    """What the harness does: YAML -> structured schema -> ranges -> loader(cfg)."""
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    schema = _locate(raw._schema_)
    cfg = OmegaConf.merge(OmegaConf.structured(schema), raw, overrides)
    obj = OmegaConf.to_object(cfg)
    check_ranges(obj, "dataset.")
    return _locate(raw._target_)(obj)


def _raises(fn, *names: str) -> str:
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def _write_pair(tmp_path: Path, sp_x=None, ref_x=None) -> tuple[str, str]:
    """Small valid spatial/reference files (optionally with replaced X) in tmp_path."""
    data = synthetic(SyntheticConfig(**SMALL))
    spatial, ref = data["spatial"], data["reference"]
    if sp_x is not None:
        spatial.X = sp_x(spatial.X)
    if ref_x is not None:
        ref.X = ref_x(ref.X)
    paths = str(tmp_path / "sp.h5ad"), str(tmp_path / "ref.h5ad")
    spatial.write_h5ad(paths[0])
    ref.write_h5ad(paths[1])
    return paths


# -- synthetic ------------------------------------------------------------------------------


def test_synthetic_deterministic_and_shaped() -> None:
    a, b = synthetic(SyntheticConfig(**SMALL)), synthetic(SyntheticConfig(**SMALL))
    c = synthetic(SyntheticConfig(**SMALL, seed=1))
    sp_a = a["spatial"]
    assert sp_a.shape == (300, 200)
    np.testing.assert_array_equal(sp_a.X, b["spatial"].X)
    np.testing.assert_array_equal(a["reference"].X.toarray(), b["reference"].X.toarray())
    assert not np.array_equal(sp_a.X, c["spatial"].X)
    w = sp_a.obsm["true_weights"]
    assert w.shape == (300, 5) and w.dtype == np.float64
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert sp_a.uns["cell_type_names"] == [f"type_{i:02d}" for i in range(5)]
    assert ((w > 0).sum(axis=1) <= 3).all() and ((w > 0).sum(axis=1) >= 1).all()
    assert sp_a.uns["generator"]["seed"] == 2025
    np.testing.assert_array_equal(sp_a.X, np.rint(sp_a.X))
    ref = a["reference"]
    assert isinstance(ref.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert (ref.obs["cell_type"].value_counts() >= 25).all()
    assert list(ref.var_names) == list(sp_a.var_names)
    validate_rctd_inputs(a, cell_min=25)


def test_synthetic_dirichlet_mix_and_yaml() -> None:
    data = _load("spatial/synthetic", mix="dirichlet", **SMALL)
    w = data["spatial"].obsm["true_weights"]
    assert (w > 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    _raises(lambda: _load("spatial/synthetic", ref_cells_per_type=10), "dataset.ref_cells_per_type")
    _raises(lambda: _load("spatial/synthetic", umi_max=100), "dataset.umi_max")
    _raises(lambda: _load("spatial/synthetic", n_types=2), "dataset.max_types_per_pixel")


def test_synthetic_platform_factor_applied() -> None:
    def log_ratio_sd(platform_sd: float) -> float:
        d = synthetic(
            SyntheticConfig(n_pixels=2000, n_genes=200, n_types=5, platform_sd=platform_sd)
        )
        # bulk spatial expression vs. the expectation from the reference profiles and truth
        ref = d["reference"]
        x = ref.X.toarray()
        prof = np.stack(
            [
                x[(ref.obs["cell_type"] == t).to_numpy()].sum(0)
                for t in ref.obs["cell_type"].cat.categories
            ],
            axis=1,
        )
        prof /= prof.sum(axis=0, keepdims=True)
        s = d["spatial"]
        expected = (s.obsm["true_weights"] * s.X.sum(1, keepdims=True)).sum(0) @ prof.T
        return float(np.std(np.log(s.X.sum(0) / expected)))

    off, on = log_ratio_sd(0.0), log_ratio_sd(0.5)
    assert off < 0.15 and on > 0.35, (off, on)
    d = synthetic(SyntheticConfig(**SMALL, platform_sd=0.5))
    assert np.std(np.log(d["spatial"].var["platform_factor"])) > 0.3


def test_synthetic_noise_changes_spatial_only() -> None:
    plain = synthetic(SyntheticConfig(**SMALL))
    noisy = synthetic(SyntheticConfig(**SMALL, noise_sigma=0.5))
    np.testing.assert_array_equal(
        plain["spatial"].obsm["true_weights"], noisy["spatial"].obsm["true_weights"]
    )
    np.testing.assert_array_equal(plain["reference"].X.toarray(), noisy["reference"].X.toarray())

    # over-dispersion: variance / mean grows with the log-normal factor
    def dispersion(d):
        x = d["spatial"].X
        lam = d["spatial"].obsm["true_weights"] @ d["spatial"].varm["true_profiles"].T
        lam *= d["spatial"].obs["target_umi"].to_numpy()[:, None]
        return float(np.mean((x - lam) ** 2 / np.maximum(lam, 1e-9)))

    assert dispersion(plain) < 1.2 < 2.0 < dispersion(noisy)


@pytest.mark.slow
def test_synthetic_speed() -> None:
    import time

    synthetic(SyntheticConfig(n_pixels=100))
    t = time.perf_counter()
    synthetic(SyntheticConfig(n_pixels=10000, n_genes=1000, n_types=12))
    assert time.perf_counter() - t < 2.0


# -- pbmc68k --------------------------------------------------------------------------------


def test_pbmc68k_counts_integral() -> None:
    src = read_h5ad(pbmc68k_path(), "dataset")
    logn = sp.csr_matrix(src.raw.X, dtype=np.float64)
    size = src.obs["n_counts"].to_numpy(dtype=np.float64) / 1e4
    rows = np.repeat(np.arange(logn.shape[0]), np.diff(logn.indptr))
    values = np.expm1(logn.data) * size[rows]
    rounded = np.rint(values)
    # raw.X is stored to 3 decimals, so the recovered counts are integral to ~1e-3 (relative)
    assert rounded.min() >= 1
    assert np.max(np.abs(values / rounded - 1)) < 1e-3
    assert np.max(np.abs(values - rounded)) < 0.25  # rounding is unambiguous
    # and they re-encode to the stored log values
    assert np.max(np.abs(np.log1p(rounded / size[rows]) - logn.data)) <= 5.1e-4

    counts = pbmc68k_counts()
    assert counts.shape == (700, 765) and sp.issparse(counts.X)
    assert np.issubdtype(counts.X.dtype, np.integer)
    assert counts.obs["bulk_labels"].nunique() == 10
    assert counts.var_names[0] == src.raw.var_names[0]
    np.testing.assert_array_equal(np.sort(counts.X.data), np.sort(rounded.astype(np.int32)))


def test_pbmc68k_mixtures() -> None:
    data = _load("spatial/pbmc68k", n_pixels=200)
    spatial, ref = data["spatial"], data["reference"]
    w = spatial.obsm["true_weights"]
    names = spatial.uns["cell_type_names"]
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert w.shape == (200, len(names)) and ((w > 0).sum(axis=1) <= 3).all()
    assert sp.issparse(spatial.X) and np.issubdtype(spatial.X.dtype, np.integer)
    assert list(ref.obs["cell_type"].cat.categories) == names
    assert (ref.obs["cell_type"].value_counts() >= 25).all()
    dropped = spatial.uns["generator"]["dropped_types"]
    assert {"CD34+", "CD4+/CD45RA+/CD25- Naive T", "CD4+/CD45RO+ Memory"} == set(dropped)
    validate_rctd_inputs(data, cell_min=25)
    # reproducible
    again = pbmc68k(PBMCConfig(n_pixels=200))
    assert (again["spatial"].X != spatial.X).nnz == 0


# -- user files -----------------------------------------------------------------------------


def test_user_h5ad_roundtrip(tmp_path: Path) -> None:
    sp_path, ref_path = _write_pair(tmp_path)
    ref = anndata.read_h5ad(ref_path)
    ref.obs = ref.obs.rename(columns={"cell_type": "celltype"})
    ref.layers["counts"] = ref.X.copy()
    ref.X = ref.X * 0.5
    ref.write_h5ad(ref_path)
    spatial = anndata.read_h5ad(sp_path)
    spatial.layers["counts"] = spatial.X.copy()
    spatial.X = np.log1p(spatial.X)
    spatial.write_h5ad(sp_path)

    data = _load(
        "spatial/h5ad",
        spatial=sp_path,
        reference=ref_path,
        cell_type_key="celltype",
        layer="counts",
    )
    assert isinstance(data["reference"].obs["cell_type"].dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(data["spatial"].X, spatial.layers["counts"])
    validate_rctd_inputs(data, cell_min=25)


def test_error_missing_key(tmp_path: Path) -> None:
    _raises(lambda: user_h5ad(H5adConfig(reference="x.h5ad")), "dataset.spatial")


def test_error_missing_file(tmp_path: Path) -> None:
    _, ref_path = _write_pair(tmp_path)
    missing = str(tmp_path / "nope.h5ad")
    _raises(
        lambda: _load("spatial/h5ad", spatial=missing, reference=ref_path),
        "dataset.spatial",
        missing,
        "not found",
    )


def test_error_not_h5ad(tmp_path: Path) -> None:
    sp_path, _ = _write_pair(tmp_path)
    bogus = tmp_path / "text.h5ad"
    bogus.write_text("gene,count\nA,1\n")
    _raises(
        lambda: user_h5ad(H5adConfig(spatial=sp_path, reference=str(bogus))),
        "dataset.reference",
        str(bogus),
        "not an h5ad",
    )
    _raises(lambda: read_h5ad(str(tmp_path), "dataset.spatial"), "dataset.spatial")


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (lambda x: x + 0.5, ["non-integer"]),
        (lambda x: -x, ["negative"]),
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), ["NaN"]),
    ],
    ids=["non_integer", "negative", "nan"],
)
def test_error_bad_counts(tmp_path: Path, corrupt, words: list[str]) -> None:
    sp_path, ref_path = _write_pair(tmp_path, sp_x=corrupt)
    _raises(
        lambda: user_h5ad(H5adConfig(spatial=sp_path, reference=ref_path)),
        "dataset.spatial",
        sp_path,
        *words,
    )


@pytest.mark.parametrize(
    ("corrupt", "word"),
    [
        (lambda v: v + 0.25, "non-integer"),
        (lambda v: v - 100, "negative"),
        (lambda v: v * np.nan, "NaN"),
    ],
)
def test_counts_matrix_sparse(corrupt, word: str) -> None:
    x = sp.random(50, 40, density=0.2, format="csr", random_state=0, dtype=np.float32)
    x.data = np.rint(x.data * 10) + 1
    adata = anndata.AnnData(X=x)
    assert counts_matrix(adata, None, "dataset.spatial") is adata.X
    adata.layers["counts"] = x.copy()
    adata.layers["counts"].data = corrupt(adata.layers["counts"].data)
    _raises(
        lambda: counts_matrix(adata, "counts", "dataset.reference"),
        "dataset.reference (layer 'counts')",
        word,
    )


def test_error_no_shared_genes() -> None:
    data = synthetic(SyntheticConfig(**SMALL))
    data["reference"].var_names = [f"other_{i}" for i in range(data["reference"].n_vars)]
    _raises(lambda: validate_rctd_inputs(data, 25), "share no genes", "other_0")


def test_error_missing_cell_type_column(tmp_path: Path) -> None:
    sp_path, ref_path = _write_pair(tmp_path)
    _raises(
        lambda: user_h5ad(H5adConfig(spatial=sp_path, reference=ref_path, cell_type_key="ct")),
        "dataset.cell_type_key",
        "'ct'",
        ref_path,
        "cell_type",
    )
    data = synthetic(SyntheticConfig(**SMALL))
    del data["reference"].obs["cell_type"]
    _raises(lambda: validate_rctd_inputs(data, 25), "dataset.reference", "'cell_type'")


def test_error_type_under_cell_min() -> None:
    data = synthetic(SyntheticConfig(**SMALL))
    ref = data["reference"]
    keep = ~((ref.obs["cell_type"] == "type_03").to_numpy() & (np.arange(ref.n_obs) % 2 == 0))
    data["reference"] = ref[keep].copy()
    n = int((data["reference"].obs["cell_type"] == "type_03").sum())
    _raises(lambda: validate_rctd_inputs(data, 25), "'type_03'", f"({n})", "method.cell_min")


def test_error_missing_layer(tmp_path: Path) -> None:
    sp_path, ref_path = _write_pair(tmp_path)
    _raises(
        lambda: user_h5ad(H5adConfig(spatial=sp_path, reference=ref_path, layer="counts")),
        "dataset.layer",
        "'counts'",
        sp_path,
    )
    adata = anndata.AnnData(X=np.ones((3, 2), dtype=np.float32))
    _raises(
        lambda: counts_matrix(adata, "counts", "dataset.spatial"),
        "dataset.spatial (layer 'counts')",
        "no such layer",
    )


def test_user_paths_are_taken_from_the_launch_directory(tmp_path, monkeypatch):
    from harness.data.counts import resolve_user_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_user_path("data/s.h5ad") == str(tmp_path / "data" / "s.h5ad")
    assert resolve_user_path("~/s.h5ad") == str(tmp_path / "home" / "s.h5ad")
    assert resolve_user_path("/abs/s.h5ad") == "/abs/s.h5ad"
