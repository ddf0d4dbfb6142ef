"""The trainers' tolerance rules (CellBender, scBERT, CellWhisperer) on constructed outputs: a
legitimate-size change passes, the planted-size change of each new or changed rule fails. The
sizes are the calibration's (``python benchmarks/calibrate_tolerances.py cellbender|scbert|
cellwhisperer``; figures in methods/<m>/config.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from methods.cellbender.check import compare as cellbender_compare
from methods.cellbender.config import CellBenderTolerance
from methods.cellwhisperer.check import compare as whisper_compare
from methods.cellwhisperer.config import CellWhispererTolerance
from methods.scbert.check import compare as scbert_compare
from methods.scbert.config import ScBERTTolerance

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"


@pytest.mark.parametrize(
    "name, tolerance",
    [("cellbender", CellBenderTolerance), ("scbert", ScBERTTolerance),
     ("cellwhisperer", CellWhispererTolerance)],
)  # fmt: skip
def test_the_yaml_tolerances_are_the_calibrated_defaults(name, tolerance):
    tol = yaml.safe_load((CONF / f"{name}.yaml").read_text())["tol"]
    assert tol == dataclasses.asdict(tolerance())


# ---- CellWhisperer ------------------------------------------------------------------------
def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _whisper(t: float = np.log(1 / 0.07) + 0.25, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cells, prompts = _unit(rng, 600, 64), _unit(rng, 6, 64)
    cells = 0.3 * cells + prompts[rng.integers(0, 6, 600)]  # near their label's prompt
    cells /= np.linalg.norm(cells, axis=1, keepdims=True)
    return {
        "cell_head.mlp.0.weight": rng.normal(size=(64, 32)),
        "text_head.mlp.0.weight": rng.normal(size=(64, 32)),
        "log_scale": np.array([t]),
        "zeroshot_logits": np.exp(t) * cells @ prompts.T,
    }


def test_whisper_temperature_rule():
    tol = CellWhispererTolerance()
    ref = _whisper()
    # a new random stream for the training (dropout masks): t moves up to 4.3e-3, the heads
    # as far as with another seed
    rng = np.random.default_rng(1)
    legit = {k: v + 1.0 * np.std(v) * rng.normal(size=v.shape) for k, v in ref.items()}
    legit["log_scale"] = ref["log_scale"] + 4.3e-3
    legit["zeroshot_logits"] = ref["zeroshot_logits"] * np.exp(4.3e-3)
    metrics, ok = whisper_compare(legit, ref, tol)
    assert ok, metrics
    assert metrics["log_scale_abs"] == pytest.approx(4.3e-3)
    assert metrics["log_scale_abs"] < tol.log_scale_abs / 2
    # the temperature frozen at its initial value (the trained one moved by 0.0176 or more
    # with any planted regression): nothing else changes, the rule alone fails it
    frozen = {**ref, "log_scale": ref["log_scale"] - 0.0176}
    metrics, ok = whisper_compare(frozen, ref, tol)
    assert not ok and metrics["log_scale_abs"] > tol.log_scale_abs
    # zero-shot logits far off (seed-to-seed: 0.81) or diverged (NaN) still fail
    assert not whisper_compare({**ref, "zeroshot_logits": ref["zeroshot_logits"] * 1.9}, ref, tol)[
        1
    ]
    assert not whisper_compare(
        {**ref, "zeroshot_logits": ref["zeroshot_logits"] * np.nan}, ref, tol
    )[1]
    assert not whisper_compare({**ref, "log_scale": np.array([np.nan])}, ref, tol)[1]


# ---- scBERT -------------------------------------------------------------------------------
def _mc_outputs(samples: int, seed: int, n: int = 300, c: int = 5) -> dict[str, np.ndarray]:
    """MC predictive summaries of a Bayesian head: per cell a mean logit and a per-sample
    spread; ``samples`` draws from ``seed``."""
    base = np.random.default_rng(0)
    mean = 8.0 * np.eye(c)[base.integers(0, c, n)] + base.normal(size=(n, c))
    draws = mean[None] + 4.0 * np.random.default_rng(seed).normal(size=(samples, n, c))
    probs = np.exp(draws - draws.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    p = probs.mean(0)
    entropy = -(p * np.log(p)).sum(-1)
    per = -(probs * np.log(probs)).sum(-1).mean(0)
    return {"head.out.weight": base.normal(size=(c, 16)), "logits": draws.mean(0),
            "probs": p, "entropy": entropy, "mutual_info": entropy - per}  # fmt: skip


def test_scbert_mutual_information_rule_catches_fewer_mc_samples():
    tol = ScBERTTolerance()
    ref = _mc_outputs(8, seed=1)
    legit = _mc_outputs(8, seed=2)  # another Monte-Carlo stream (eval batch size)
    metrics, ok = scbert_compare(legit, ref, tol)
    assert ok, metrics
    assert metrics["mutual_info_rel"] < tol.mutual_info_rel / 2
    # a quarter of the samples: about 1 − 1/2 of the mutual information instead of 1 − 1/8
    quarter = _mc_outputs(2, seed=1)
    metrics, ok = scbert_compare(quarter, ref, tol)
    assert not ok and metrics["mutual_info_rel"] > tol.mutual_info_rel
    assert metrics["prediction_agreement"] >= tol.prediction_agreement  # only this rule
    # less training (a third of the backward passes skipped): +59% mutual information
    uncertain = {**ref, "mutual_info": ref["mutual_info"] * 1.59}
    metrics, ok = scbert_compare(uncertain, ref, tol)
    assert not ok and metrics["mutual_info_rel"] > tol.mutual_info_rel


def _swap_top2(logits: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of cells with the narrowest top-2 margin get their top two swapped."""
    top = np.sort(logits, axis=1)
    n = int(round(share * logits.shape[0]))
    cells = np.argsort(top[:, -1] - top[:, -2])[:n]
    out = logits.copy()
    first, second = np.argsort(-logits[cells], axis=1)[:, :2].T
    out[cells, first], out[cells, second] = logits[cells, second], logits[cells, first]
    return out


def test_scbert_retrained_head_passes_but_a_different_function_fails():
    tol = ScBERTTolerance()
    ref = _mc_outputs(8, seed=1)
    rng = np.random.default_rng(3)
    # the chaotic training (a 1e-6 perturbed initialisation) retrains the head elsewhere, and
    # another MC stream flips the narrowest 8% of the calls
    legit = {**_mc_outputs(8, seed=2), "head.out.weight": rng.normal(size=(5, 16))}
    legit["logits"] = _swap_top2(ref["logits"], 0.08)
    metrics, ok = scbert_compare(legit, ref, tol)
    assert ok, metrics
    worse = {**legit, "logits": _swap_top2(ref["logits"], 0.2)}  # beyond twice the 8%
    metrics, ok = scbert_compare(worse, ref, tol)
    assert not ok and metrics["prediction_agreement"] < tol.prediction_agreement
    pruned = {**legit, "head.out.weight": np.zeros((5, 12))}  # another shape
    assert not scbert_compare(pruned, ref, tol)[1]


# ---- CellBender ---------------------------------------------------------------------------
def _cellbender(raw: np.ndarray, removed: np.ndarray, elbo: np.ndarray) -> dict[str, object]:
    """Outputs of a run that called ``raw``'s rows cells (plus 200 empties) and removed
    ``removed`` from them."""
    cells, genes = raw.shape
    denoised = np.zeros((cells + 200, genes))
    denoised[:cells] = raw - removed
    fraction = np.zeros(cells + 200)
    fraction[:cells] = removed.sum(1) / raw.sum(1)
    return {
        "cell_probability": np.r_[np.full(cells, 0.99), np.full(200, 0.01)],
        "ambient": np.full(genes, 1.0 / genes),
        "denoised": sp.csr_matrix(denoised),
        "background_fraction": fraction,
        "elbo_train": elbo,
    }


def _droplet_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = rng.poisson(30, size=(300, 80))
    removed = rng.binomial(raw, 0.08 * rng.gamma(20, 1 / 20, size=(300, 1)))
    elbo = -830 + 3 * rng.normal(size=150)
    return raw, removed, elbo


def test_cellbender_legitimate_reallocation_passes():
    tol = CellBenderTolerance()
    raw, removed, elbo = _droplet_case()
    ref = _cellbender(raw, removed, elbo)
    # another posterior stream: per gene, a few counts removed from other cells (totals kept);
    # another training stream: the ELBO curve moves by its epoch-to-epoch noise
    rng = np.random.default_rng(1)
    moved = removed.copy()
    for g in range(raw.shape[1]):
        give = rng.choice(np.flatnonzero(moved[:, g] > 0), 8, replace=False)
        take = rng.choice(np.flatnonzero(moved[:, g] < raw[:, g]), 8, replace=False)
        moved[give, g] -= 1
        moved[take, g] += 1
    legit = _cellbender(raw, moved, elbo + 3 * rng.normal(size=150))
    metrics, ok = cellbender_compare(legit, ref, tol)
    assert ok, metrics
    assert metrics["removed_gene_rel"] == 0.0 and metrics["elbo_rel"] < tol.elbo_rel / 2


def test_cellbender_one_posterior_draw_less_training_and_a_gene_shift_fail():
    tol = CellBenderTolerance()
    raw, removed, elbo = _droplet_case()
    ref = _cellbender(raw, removed, elbo)
    rng = np.random.default_rng(2)
    # one posterior draw: every cell's removal scaled by its own draw (totals about the same)
    noisy = rng.binomial(raw, 0.08 * rng.gamma(9, 1 / 9, size=(300, 1)))
    metrics, ok = cellbender_compare(_cellbender(raw, noisy, elbo), ref, tol)
    assert not ok and metrics["background_spread_rel"] > tol.background_spread_rel
    # less training (skipped backward passes, half the epochs): a worse final ELBO, by 1.5%
    metrics, ok = cellbender_compare(_cellbender(raw, removed, elbo * 1.015), ref, tol)
    assert not ok and metrics["elbo_rel"] > tol.elbo_rel
    assert metrics["removed_gene_rel"] == 0.0  # only the ELBO rule fails it
    # 15% less removed from half of the genes: the per-gene rule
    fewer = removed.copy()
    fewer[:, ::2] = rng.binomial(removed[:, ::2], 0.85)
    metrics, ok = cellbender_compare(_cellbender(raw, fewer, elbo), ref, tol)
    assert not ok and metrics["removed_gene_rel"] > tol.removed_gene_rel
    # a run that lost its learning curve is not close to one that has it
    no_curve = {**_cellbender(raw, removed, elbo), "elbo_train": np.zeros(0)}
    assert not cellbender_compare(no_curve, ref, tol)[1]
