"""CellBender: data with truth, bad inputs as one line, a short training that finds the cells
and the ambient profile, MCKP meets its targets, SIGKILL → resume with the uninterrupted
hash, a posterior-only run from a finished checkpoint, the output file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from harness.sinks.results_tsv import read_rows
from methods.cellbender.data import SyntheticConfig, synthetic
from methods.cellbender.posterior import NoisePosterior, estimate, posterior_mean
from tests.conftest import REPO

SMALL = ["dataset.n_genes=120", "dataset.cells_per_type=60", "dataset.n_droplets=1200"]
BASE = ["method=cellbender", "hardware=cpu", "hardware.threads=1", "tracking.mlflow=false",
        "bench.warmup_steps=2", "method.posterior_samples=6", *SMALL]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _harness(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _cfg(**kw) -> SyntheticConfig:
    return SyntheticConfig(name="droplets/synthetic", _target_="x", _schema_="x", **kw)


def test_synthetic_droplets_keep_their_truth():
    a = synthetic(_cfg(n_genes=100, cells_per_type=50, n_droplets=800))["droplets"]
    b = synthetic(_cfg(n_genes=100, cells_per_type=50, n_droplets=800))["droplets"]
    assert (a.X != b.X).nnz == 0  # seeded
    assert a.shape == (800, 100) and a.obs["cell"].sum() == 150
    x = sp.csr_matrix(a.X)
    parts = sp.csr_matrix(a.layers["counts_true"]) + sp.csr_matrix(a.layers["counts_bkg"])
    assert abs(x - parts).max() == 0  # observed = signal + background
    assert np.isclose(a.uns["chi_ambient"].sum(), 1.0)
    cells = a.obs["cell"].to_numpy()
    umi = np.asarray(x.sum(axis=1)).ravel()
    assert np.median(umi[cells]) > 10 * np.median(umi[~cells])
    frac = a.layers["counts_bkg"][cells].sum() / x[cells].sum()
    assert 0.02 < frac < 0.2


@pytest.mark.slow
def test_bad_inputs_are_one_line(tmp_path):
    import anndata

    cells = synthetic(_cfg(n_genes=60, cells_per_type=40, n_droplets=600))["droplets"]
    filtered = cells[cells.obs["cell"].to_numpy()].copy()
    filtered.write_h5ad(tmp_path / "filtered.h5ad")
    frac = cells.copy()
    frac.X = sp.csr_matrix(frac.X) * 0.5
    frac.write_h5ad(tmp_path / "normalised.h5ad")
    anndata.AnnData(X=sp.csr_matrix(np.ones((5, 3)))).write_h5ad(tmp_path / "tiny.h5ad")
    cells.write_h5ad(tmp_path / "raw.h5ad")
    cases = [
        (["dataset.path=filtered.h5ad"], "unfiltered"),
        (["dataset.path=normalised.h5ad"], "non-integer"),
        (["dataset.path=tiny.h5ad"], "too few droplets"),
        (["dataset.path=raw.h5ad", "method.expected_cells=600"], "method.expected_cells"),
        (["dataset.path=missing.h5ad"], "not found"),
    ]
    for extra, text in cases:
        proc = _harness(tmp_path, "method=cellbender", "dataset=droplets/file", *extra)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and text in lines[0], proc.stderr
    assert not (tmp_path / "results" / "results.tsv").exists()


def test_mckp_meets_each_genes_target():
    """Per gene the removed counts equal Σ E[k | x] + fpr × Σ (x − E[k | x]), whether that lies
    above the entries' MAP (steps up) or below it (steps down, here with a left-skewed window)."""
    from scipy.special import gammaln

    rng = np.random.default_rng(0)
    e, w = 400, 20
    x = rng.integers(1, 40, e)
    k0 = np.zeros(e, dtype=np.int64)
    k = np.arange(w)[None, :]
    cols = rng.integers(0, 5, e)
    for scale, fpr, flip in ((1.0, 0.01, False), (3.0, 0.05, False), (2.0, 0.0, True)):
        lam = rng.uniform(0.5, 4.0, e) * scale
        logp = k * np.log(lam[:, None]) - lam[:, None] - gammaln(k + 1)
        if flip:  # mass piled up at the top of the window, a tail reaching down
            logp = np.where(k <= x[:, None], 0.0, -np.inf) + logp[:, ::-1]
        logp = np.where(k <= x[:, None], logp, -np.inf)
        logp = logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)
        post = NoisePosterior.from_dense(np.arange(e), cols, x, k0, logp)
        noise = estimate(post, 5, fpr=fpr)
        mean = posterior_mean(post)
        target = np.bincount(cols, weights=mean + fpr * (x - mean), minlength=5)
        map_noise = estimate(post, 5, fpr=fpr, method="map")
        assert np.array_equal(map_noise, np.argmax(logp, axis=1))
        assert np.abs(np.bincount(cols, weights=map_noise, minlength=5) - target).max() > 5
        got = np.bincount(cols, weights=noise, minlength=5)
        assert np.all(np.abs(got - np.rint(target)) <= 1), (scale, got, target)
        assert np.all(noise <= x) and np.all(noise >= 0)


def _dense_estimate(rows, cols, x, k0, logp, n_genes, fpr):
    """The estimator as it was on the dense (E, W) window (before #23 item 4), for reference."""
    from methods.cellbender.posterior import _chain_costs

    best = np.argmax(logp, axis=1)
    w = logp.shape[1]
    j = np.arange(w - 1)[None, :]
    with np.errstate(invalid="ignore"):
        up = logp[:, :-1] - logp[:, 1:]
    prob = np.exp(logp)
    mean = (prob * (k0[:, None] + np.arange(w))).sum(1) / np.maximum(prob.sum(1), 1e-300)
    target = np.bincount(cols, weights=mean + fpr * (x - mean), minlength=n_genes)
    need = np.rint(target - np.bincount(cols, weights=k0 + best, minlength=n_genes)).astype(int)
    inc = _chain_costs(up, j >= best[:, None], reverse=False)
    dec = _chain_costs(-up, j < best[:, None], reverse=True)
    choice = best.copy()
    for sign, costs in ((1, inc), (-1, dec)):
        genes = np.flatnonzero(sign * need > 0)
        e_idx, steps = np.nonzero(np.isfinite(costs) & np.isin(cols, genes)[:, None])
        gene = cols[e_idx]
        order = np.lexsort((costs[e_idx, steps], gene))
        e_idx, gene = e_idx[order], gene[order]
        starts, ends = np.searchsorted(gene, genes), np.searchsorted(gene, genes, side="right")
        take = np.zeros(e_idx.size, dtype=bool)
        for g, a, b in zip(genes, starts, ends, strict=True):
            take[a : a + min(b - a, int(sign * need[g]))] = True
        choice = choice + sign * np.bincount(e_idx[take], minlength=x.size)
    return k0 + np.clip(choice, 0, w - 1)


def test_compact_posterior_estimates_as_the_dense_window(monkeypatch):
    """The kept posterior (ragged spans, float32) and the chunked estimator give the dense
    estimator's noise counts exactly, whatever the chunk and however often the cheapest steps
    are merged; ties in cost included."""
    from scipy.special import gammaln

    from methods.cellbender import posterior

    rng = np.random.default_rng(1)
    n_cells, n_genes, w = 300, 40, 12
    dense = rng.random((n_cells, n_genes)) < 0.5
    rows, cols = np.nonzero(dense)
    e = rows.size
    x = rng.integers(1, 30, e)
    k0 = np.maximum(rng.integers(-3, 8, e), 0)
    k0 = np.minimum(k0, np.maximum(x - w + 1, 0))
    k = k0[:, None] + np.arange(w)[None, :]
    lam = rng.uniform(0.2, 6.0, e)[:, None]
    logp = k * np.log(lam) - lam - gammaln(k + 1)
    logp = np.where(k <= x[:, None], logp, -np.inf)
    logp = (logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)).astype(np.float32)
    logp = np.round(logp, 1).astype(np.float64)  # many equal costs: the tie order matters
    logp = np.where(logp < -10, -np.inf, logp)
    post = NoisePosterior.from_dense(rows, cols, x, k0, logp, n_cells)
    assert post.values.size < np.isfinite(logp).sum() + e and np.array_equal(post.rows, rows)
    for fpr in (0.0, 0.01, 0.2):
        want = _dense_estimate(rows, cols, x, k0, logp, n_genes, fpr)
        for chunk, flush in ((1, 1), (7, 50), (500, 3), (None, posterior.FLUSH)):
            monkeypatch.setattr(posterior, "FLUSH", flush)
            got = estimate(post, n_genes, fpr, chunk=chunk)
            assert np.array_equal(got, want), (fpr, chunk, flush)
        mean = posterior_mean(post, chunk=13)
        assert np.array_equal(mean, posterior_mean(post))


@pytest.mark.slow
def test_training_finds_the_cells_and_the_ambient(tmp_path):
    proc = _harness(tmp_path, *BASE, "method.epochs=40", f"run.output={tmp_path}/out.h5ad")
    assert proc.returncode == 0, proc.stderr
    metric = {k: float(v) for k, v in re.findall(r"^\s+(\w+)\s+: ([-0-9.e+]+)$", proc.stdout, re.M)}
    assert metric["cell_f1"] >= 0.97 and metric["ambient_corr"] >= 0.98
    assert metric["signal_kept"] >= 0.9 and metric["background_removed"] >= 0.3
    import anndata

    out = anndata.read_h5ad(tmp_path / "out.h5ad")
    assert out.obs["cell_called"].sum() == int(metric["cells_called"])
    raw = sp.csr_matrix(out.layers["raw"])
    assert (sp.csr_matrix(out.X) - raw).max() <= 0  # counts only ever removed
    assert out.obsm["gene_expression_encoding"].shape[1] == 64
    assert np.isclose(out.var["ambient_expression"].sum(), 1.0, atol=1e-6)


CKPT = ["checkpoint.enabled=true", "checkpoint.every_epochs=null", "checkpoint.every_steps=3"]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_hash(tmp_path):
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    plain.mkdir()
    killed.mkdir()
    args = [*BASE, "method.epochs=12"]
    assert _harness(plain, *args).returncode == 0
    reference = read_rows(plain / "results" / "results.tsv")[-1]
    ck = killed / "results" / "checkpoints" / "cellbender" / "droplets_synthetic__cpu.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args, *CKPT], cwd=killed, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and ck.exists()
    done = _harness(killed, *args, *CKPT)
    assert done.returncode == 0, done.stderr
    row = read_rows(killed / "results" / "results.tsv")[-1]
    assert row["resumed"] and row["output_hash"] == reference["output_hash"]
    assert not ck.exists()


@pytest.mark.slow
def test_posterior_only_from_a_finished_checkpoint(tmp_path):
    args = [*BASE, "method.epochs=8", "checkpoint.enabled=true", "checkpoint.keep=true"]
    first = _harness(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    again = _harness(tmp_path, *args)  # resumes at the last epoch: posterior + estimate only
    assert again.returncode == 0, again.stderr
    a, b = read_rows(tmp_path / "results" / "results.tsv")
    assert b["resumed"].startswith("8/") and b["output_hash"] == a["output_hash"]
    assert "resuming from" in again.stdout


def test_h5_output_reads_as_cellbenders(tmp_path):
    """``run.output=x.h5``: scanpy's ``read_10x_h5`` reads the denoised counts of every droplet
    and, from ``x_filtered.h5``, of the called cells; cellbender's reader too where installed."""
    import importlib.util

    import scanpy as sc

    from methods.cellbender.method import GLOBAL_LATENTS
    from methods.cellbender.output import write_h5

    a = synthetic(_cfg(n_genes=40, cells_per_type=20, n_droplets=300))["droplets"]
    rng = np.random.default_rng(0)
    n = a.n_obs
    p = np.where(a.obs["cell"].to_numpy(), 0.99, 0.01)
    analysed = np.arange(0, 200)
    p[200:] = 0.0
    x = sp.csr_matrix(a.X, dtype=np.float64)
    clean = sp.csr_matrix(x.multiply((p > 0.5)[:, None]))
    clean.data = np.floor(clean.data * 0.9)
    clean.eliminate_zeros()
    outputs = {
        "denoised": clean, "cell_probability": p, "cell_size": rng.uniform(1, 2, n),
        "efficiency": rng.uniform(0.5, 2, n), "background_fraction": rng.uniform(0, 1, n),
        "latent_z": rng.normal(size=(n, 64)), "ambient": np.full(a.n_vars, 1 / a.n_vars),
        "analysed": analysed, "global_latents": np.arange(len(GLOBAL_LATENTS), dtype=float),
        "elbo_train": np.arange(5.0), "elbo_test": np.arange(1.0),
    }  # fmt: skip
    write_h5(outputs, a, tmp_path / "out.h5")
    full = sc.read_10x_h5(tmp_path / "out.h5")
    assert list(full.obs_names) == list(a.obs_names) and list(full.var_names) == list(a.var_names)
    assert abs(sp.csr_matrix(full.X) - clean).max() == 0
    cells = sc.read_10x_h5(tmp_path / "out_filtered.h5")
    assert list(cells.obs_names) == list(a.obs_names[p > 0.5])
    assert abs(sp.csr_matrix(cells.X) - clean[p > 0.5]).max() == 0
    if importlib.util.find_spec("cellbender") is not None:
        from cellbender.remove_background.downstream import anndata_from_h5

        b = anndata_from_h5(str(tmp_path / "out.h5"))
        assert b.n_obs == analysed.size
        assert np.allclose(b.obs["cell_probability"], p[analysed])
        assert np.allclose(b.var["ambient_expression"], outputs["ambient"])
