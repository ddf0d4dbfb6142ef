"""RCTD pipeline: sigma estimation, platform effect, doublet and multi mode, result file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anndata
import numpy as np
import pytest
import torch

from harness.bench.contract import RunContext, RunResult
from harness.bench.runtime import Runtime
from methods.rctd.config import HASHED_OUTPUTS, RCTDConfig
from methods.rctd.data import SyntheticConfig, synthetic
from methods.rctd.doublet import CERTAIN, REJECT, SINGLET, SPOT_CLASSES, UNCERTAIN, classify
from methods.rctd.method import RCTD
from methods.rctd.platform import fit_bulk, normalise_profiles
from methods.rctd.qtable import SIGMA_GRID


def _run(cache: Path, mode: str, sigma: int | None, cfg_kw: dict | None = None, **data_kw):
    torch.set_num_threads(1)
    data = synthetic(SyntheticConfig(**data_kw))
    cfg = RCTDConfig(
        name="rctd", _target_="x", _schema_="x", mode=mode, sigma_override=sigma, **(cfg_kw or {})
    )
    rt = Runtime(torch.device("cpu"), torch.float64, False, False, 1, cache)
    method = RCTD(cfg, rt)
    method.check_inputs(data)
    out = {k: v.numpy() for k, v in method.run(method.prepare(data), RunContext()).items()}
    return method, data, out


@pytest.fixture(scope="module")
def doublet_run(table_cache):
    kw = dict(n_pixels=400, n_genes=300, n_types=6, max_types_per_pixel=2, noise_sigma=0.3)
    return _run(table_cache, "doublet", 30, {"umi_min": 1000}, **kw)  # drops ~1/6 of pixels


@pytest.fixture(scope="module")
def multi_run(table_cache):
    kw = dict(n_pixels=300, n_genes=300, n_types=6, max_types_per_pixel=3, noise_sigma=0.3)
    return _run(table_cache, "multi", 30, **kw)


# ------------------------------------------------------------------------------ sigma


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.3, 0.5])
def test_sigma_estimation_recovers_noise_level(table_cache, noise):
    kw = dict(n_pixels=400, n_genes=300, n_types=4, noise_sigma=noise, platform_sd=0.2)
    method, data, out = _run(table_cache, "full", None, **kw)
    sigma = int(round(out["sigma"][0] * 100))
    truth = round(noise * 100)
    i, j = SIGMA_GRID.index(sigma), SIGMA_GRID.index(truth)
    assert abs(i - j) <= 1, (sigma, truth)  # within one grid step
    assert set(out) == {"weights", "converged", "pixel_mask", "sigma"}
    assert method.cfg.hashed_outputs == HASHED_OUTPUTS["full"]


# ------------------------------------------------------------------------------ platform effect


def _bulk_case(sd: float):
    rng = np.random.default_rng(5)
    g, k, n = 400, 5, 3000
    prof = rng.exponential(1.0, (g, k))
    prof /= prof.sum(0)
    factor = np.exp(rng.normal(0, sd, g))
    w = rng.dirichlet(np.full(k, 2.0), n)
    numi = rng.integers(300, 3000, n)
    counts = rng.poisson(numi[:, None] * (w @ (prof * factor[:, None]).T))
    wbar = (numi[:, None] * w).sum(0)
    t = torch.from_numpy
    return t(prof), t(counts).double(), t(numi).double(), factor, wbar / wbar.sum()


@pytest.mark.parametrize("sd", [0.0, 0.5])
def test_platform_effect_recovered(sd):
    prof, counts, numi, factor, wbar = _bulk_case(sd)
    p = fit_bulk(counts, numi, prof)
    assert p.shape == (5,) and float(p.sum()) == pytest.approx(1.0) and bool((p >= 0).all())
    norm = normalise_profiles(prof, counts, numi, p).numpy()
    ratio = np.log(norm / prof.numpy())  # per gene: the recovered platform factor
    assert np.allclose(ratio, ratio[:, :1], atol=1e-12)  # one factor per gene, all types
    est = ratio[:, 0] - ratio[:, 0].mean()
    true = np.log(factor) - np.log(factor).mean()
    if sd == 0:  # the bulk composition is the UMI-weighted mean of the pixels'
        assert np.abs(p.numpy() - wbar).max() < 0.01
        assert np.abs(est).max() < 0.1
    else:  # the per-gene factors are recovered
        assert np.corrcoef(est, true)[0, 1] > 0.97


def test_pipeline_with_platform_effect(table_cache):
    kw = dict(n_pixels=300, n_genes=300, n_types=4, platform_sd=0.5, noise_sigma=0.3)
    method, data, out = _run(table_cache, "full", 30, **kw)
    q = method.quality(RunResult(out), data)
    assert q["truth_dominant_accuracy"] >= 0.95 and q["converged_fraction"] > 0.99


# ------------------------------------------------------------------------------ doublet mode


def test_classify_spot_classes():
    iu = torch.triu_indices(3, 3, offset=1)  # pairs (0,1), (0,2), (1,2)
    inf = float("inf")
    pair = torch.tensor(
        [
            [100.0, 200.0, 200.0],  # only (0,1) near: both in all pairs -> certain
            [100.0, 103.0, 200.0],  # (0,1), (0,2) near: 0 in all, 1 not -> uncertain (0 first)
            [100.0, 200.0, 103.0],  # (0,1), (1,2) near: 1 in all, 0 not -> uncertain, swap
            [100.0, 102.0, 103.0],  # all near: neither -> reject
            [100.0, 200.0, 200.0],  # singlet score within 20 of the pair -> singlet
            [100.0, inf, inf],  # two candidates only
        ],
        dtype=torch.float64,
    )
    singlet = torch.tensor(
        [
            [150.0, 140.0, 300.0],  # certain: type of the lower singlet score (slot 1) first
            [150.0, 140.0, 300.0],
            [150.0, 140.0, 300.0],
            [150.0, 140.0, 300.0],
            [110.0, 140.0, 300.0],
            [130.0, 115.0, inf],
        ],
        dtype=torch.float64,
    )
    spot, first, second, min_score, single = classify(pair, singlet, iu, 5.0, 20.0)
    assert spot.tolist() == [CERTAIN, UNCERTAIN, UNCERTAIN, REJECT, SINGLET, SINGLET]
    assert first.tolist() == [1, 0, 1, 0, 0, 1] and second.tolist() == [0, 1, 0, 1, 1, 0]
    assert min_score.tolist() == [100.0] * 6
    assert single.tolist() == [140.0, 150.0, 140.0, 140.0, 110.0, 115.0]
    assert SPOT_CLASSES == ("reject", "singlet", "doublet_certain", "doublet_uncertain")


def test_doublet_mode_finds_singlets_and_doublets(doublet_run):
    method, data, out = doublet_run
    sp = data["spatial"]
    mask = out["pixel_mask"]
    n_true = sp.obs["true_n_types"].to_numpy()[mask]
    truth = sp.obsm["true_weights"][mask]
    minor = np.sort(truth, 1)[:, -2]
    spot = out["spot_class"]
    assert set(np.unique(spot)) <= {0, 1, 2, 3}
    assert np.mean(spot[n_true == 1] == SINGLET) >= 0.97  # singlets called singlet
    doublet = (n_true == 2) & (minor >= 0.25)  # clear doublets
    assert 0.7 < mask.mean() < 0.95 and doublet.sum() > 50
    assert np.mean(np.isin(spot[doublet], [CERTAIN, UNCERTAIN])) >= 0.95
    pair = {frozenset(r) for r in np.stack([out["first_type"], out["second_type"]], 1).tolist()}
    assert all(len(p) == 2 for p in pair)
    found = np.sort(np.stack([out["first_type"], out["second_type"]], 1), 1)[doublet]
    true = np.sort(np.argsort(-truth, 1)[:, :2], 1)[doublet]
    assert np.mean(np.all(found == true, 1)) >= 0.95
    np.testing.assert_allclose(out["weights_doublet"].sum(1), 1.0, atol=1e-12)
    q = method.quality(RunResult(out), data)
    assert q["truth_singlet_called_singlet"] >= 0.97
    assert set(HASHED_OUTPUTS["doublet"]) <= set(out)


# ------------------------------------------------------------------------------ multi mode


def test_multi_mode(multi_run):
    method, data, out = multi_run
    sp = data["spatial"]
    truth = sp.obsm["true_weights"][out["pixel_mask"]]
    idx, n_types = out["cell_type_indices"], out["n_types"]
    assert idx.shape[1] == 4 and np.all((n_types >= 1) & (n_types <= 4))
    assert np.all((idx >= 0) == (np.arange(4)[None, :] < n_types[:, None]))
    assert not out["conf_list"][idx < 0].any()
    sub = out["sub_weights"]
    np.testing.assert_allclose(sub.sum(1), 1.0, atol=1e-12)
    assert np.all(sub[idx < 0] == 0)
    clear = np.all((truth == 0) | (truth >= 0.2), axis=1)  # no minor types below 20 %
    hit = [set(r[r >= 0]) == set(np.flatnonzero(t)) for r, t in zip(idx, truth, strict=True)]
    assert clear.sum() > 100 and np.mean(np.asarray(hit)[clear]) >= 0.9
    assert np.mean(idx[:, 0] == truth.argmax(1)) >= 0.9


# ------------------------------------------------------------------------------ result file


@pytest.mark.parametrize("which", ["full", "doublet", "multi"])
def test_output_h5ad_roundtrip(tmp_path, doublet_run, multi_run, which):
    method, data, out = multi_run if which == "multi" else doublet_run
    if which == "full":  # the full-mode outputs of the doublet run
        method = RCTD(dataclasses.replace(method.cfg, mode="full"), method.runtime)
        method.type_names = doublet_run[0].type_names
        out = {k: out[k] for k in HASHED_OUTPUTS["full"]}
    path = tmp_path / "sub" / "out.h5ad"
    method.write_output(RunResult(out), data, path)
    back = anndata.read_h5ad(path)
    mask = out["pixel_mask"]
    assert (
        back.n_obs == data["spatial"].n_obs and back.obs["rctd_kept"].to_numpy().sum() == mask.sum()
    )
    w = back.obsm["rctd_weights"]  # a DataFrame: pixels × named cell types
    names = list(back.uns["rctd"]["cell_type_names"])
    assert list(w.columns) == names and list(w.index) == list(back.obs_names)
    np.testing.assert_array_equal(w.to_numpy()[mask], out["weights"])
    assert np.isnan(w.to_numpy()[~mask]).all()
    norm = back.obsm["rctd_weights_norm"].to_numpy()
    np.testing.assert_allclose(norm[mask].sum(1), 1.0, atol=1e-12)
    assert names == method.type_names and back.uns["rctd"]["mode"] == which
    assert back.uns["rctd"]["sigma"] == pytest.approx(0.3)
    assert back.uns["rctd"]["config"]["sigma_override"] == 30
    first = back.obs["rctd_first_type"]
    assert list(first.cat.categories) == names
    if which == "full":
        top = np.argsort(-out["weights"], axis=1, kind="stable")[:, :2]
        assert (first.to_numpy()[mask] == np.array(names)[top[:, 0]]).all()
        assert (back.obs["rctd_second_type"].to_numpy()[mask] == np.array(names)[top[:, 1]]).all()
        assert "rctd_spot_class" not in back.obs and first.isna().sum() == (~mask).sum()
    elif which == "doublet":
        spot = back.obs["rctd_spot_class"]
        assert list(spot.cat.categories) == list(SPOT_CLASSES)
        np.testing.assert_array_equal(spot.cat.codes.to_numpy()[mask], out["spot_class"])
        assert (first.to_numpy()[mask] == np.array(names)[out["first_type"]]).all()
        pair = back.obsm["rctd_weights_doublet"]
        assert list(pair.columns) == ["first_type", "second_type"]
        np.testing.assert_array_equal(pair.to_numpy()[mask], out["weights_doublet"])
    else:
        np.testing.assert_array_equal(back.obs["rctd_n_types"].to_numpy()[mask], out["n_types"])
        np.testing.assert_array_equal(
            back.obsm["rctd_cell_type_indices"][mask], out["cell_type_indices"]
        )
        assert back.obsm["rctd_conf_list"].dtype == bool
        row = out["cell_type_indices"][0]
        assert back.obs["rctd_cell_types"].iloc[np.flatnonzero(mask)[0]] == ",".join(
            names[i] for i in row if i >= 0
        )


# ------------------------------------------------------------------------------ harness glue


def test_table_store_loads_lazily_and_exports_for_rctd_py(tmp_path, table_cache):
    from methods.rctd.qtable import TableStore, save_rctd_py_npz
    from methods.rctd.sigma import sigma_window

    assert sigma_window(100) == list(range(84, 117, 2))
    assert sigma_window(10)[:2] == [10, 11] and len(sigma_window(10)) == 9
    assert sigma_window(70) == [*range(62, 71), 72, 74, 76, 78, 80, 82, 84, 86]
    store = TableStore(100, table_cache, "cpu", torch.float64).preload([30])
    assert 30 in store and 31 not in store
    t31 = store[31]
    assert 31 in store and store[31] is t31 and t31.q.shape == (103, 439)
    save_rctd_py_npz(tmp_path / "q.npz", [store[30], t31])
    with np.load(tmp_path / "q.npz") as z:
        assert sorted(z.files) == ["Q_30", "Q_31", "X_vals"] and z["X_vals"][-1] == 1600.0


def test_cli_doublet_mode_writes_output(harness_cli, tmp_path):
    from tests.conftest import SMALL

    proc = harness_cli(
        "hardware=cpu", *SMALL, "method.mode=doublet", "method.sigma_override=100",
        "run.output=res/out.h5ad", "tracking.mlflow=false", "bench.repeats=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    back = anndata.read_h5ad(tmp_path / "res" / "out.h5ad")
    assert list(back.obs["rctd_spot_class"].cat.categories) == list(SPOT_CLASSES)
    assert back.uns["rctd"]["mode"] == "doublet" and back.uns["rctd"]["sigma"] == 1.0
    assert "truth_singlet_called_singlet" in proc.stdout


@pytest.mark.parametrize(
    ("override", "key"),
    [("method.mode=triplet", "method.mode"), ("method.sigma_override=5", "method.sigma_override")],
)
def test_bad_rctd_settings_are_one_line_errors(harness_cli, override, key):
    proc = harness_cli("hardware=cpu", override)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0]
