"""The correctness tiers can fail: RCTD's per-output rules on constructed cases (a single
flipped pixel in a large run passes, a systematic shift fails; every mode's own outputs are
compared), and the verdict's work-counter gate."""

from __future__ import annotations

import numpy as np

from harness.bench.baseline import Baseline, verdict
from harness.bench.contract import RunResult
from methods.rctd.check import compare
from methods.rctd.config import HASHED_OUTPUTS, RCTDTolerance

TOL = RCTDTolerance()


def _full(n: int = 50_000, k: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k), size=n)
    return {
        "weights": w,
        "converged": np.ones(n, dtype=bool),
        "pixel_mask": np.ones(n + 10, dtype=bool),
        "sigma": np.array([0.84]),
    }


def test_one_flipped_pixel_in_a_large_run_passes_a_systematic_shift_fails():
    ref = _full()
    got = {k: v.copy() for k, v in ref.items()}
    got["weights"] += 1e-7  # float32-like noise everywhere
    got["weights"][123] += 2e-3  # one pixel stopped one IRWLS iteration earlier
    got["converged"][123] = False
    metrics, ok = compare(got, ref, TOL, "full")
    assert ok and metrics["dw_outliers"] == 1 / 50_000
    shifted = {**got, "weights": ref["weights"] + 4e-4}  # qp_sweeps=10-like: every pixel moves
    assert not compare(shifted, ref, TOL, "full")[1]
    far = {**got, "weights": got["weights"].copy()}
    far["weights"][7] += 0.2  # one pixel beyond the hard cap
    assert not compare(far, ref, TOL, "full")[1]
    other_sigma = {**got, "sigma": np.array([0.86])}
    assert not compare(other_sigma, ref, TOL, "full")[1]


def test_doublet_and_multi_outputs_each_have_a_rule():
    n = 2000
    ref = _full(n)
    rng = np.random.default_rng(1)
    ref.update(
        weights_doublet=rng.dirichlet(np.ones(2), size=n),
        spot_class=rng.integers(0, 4, n),
        first_type=rng.integers(0, 12, n),
        second_type=rng.integers(0, 12, n),
        first_class=np.zeros(n, dtype=bool),
        second_class=np.zeros(n, dtype=bool),
        min_score=rng.random(n) * 500,
        singlet_score=rng.random(n) * 500,
    )
    assert set(HASHED_OUTPUTS["doublet"]) <= set(ref)
    assert compare(ref, ref, TOL, "doublet")[1]
    truncated = {**ref, "weights_doublet": ref["weights_doublet"] + 0.05}  # final fit cut short
    metrics, ok = compare(truncated, ref, TOL, "doublet")
    assert not ok and metrics["dw_doublet_outliers"] == 1.0
    scores = {**ref, "min_score": ref["min_score"] * (1 + 1e-4)}
    assert not compare(scores, ref, TOL, "doublet")[1]
    classes = {**ref, "spot_class": (ref["spot_class"] + (np.arange(n) < 40)) % 4}  # 2% flipped
    assert not compare(classes, ref, TOL, "doublet")[1]


def test_work_counters_must_equal_the_baseline():
    out = {"y": np.arange(3.0)}
    base = Baseline(output_hash="h", outputs=out, meta={}, work={"optimizer_steps": 30})
    same = RunResult(outputs=out, work={"optimizer_steps": 30})
    fewer = RunResult(outputs=out, work={"optimizer_steps": 20})

    def never(result, ref):  # the tolerance must not even be consulted
        raise AssertionError

    assert verdict("h", same, base, never)[0] == "exact"
    label, metrics = verdict("h", fewer, base, never)  # same hash, less work: still wrong
    assert label == "wrong" and metrics["work_optimizer_steps"] == 20


def test_max_relative_l2_does_not_pass_a_nan_tensor():
    from harness.bench.distance import max_relative_l2

    ref = {"head.w": np.ones(4)}
    assert max_relative_l2({"head.w": np.ones(4) * 1.001}, ref, ("head.",)) < 0.01
    nan = {"head.w": np.array([1.0, np.nan, 1.0, 1.0])}
    assert max_relative_l2(nan, ref, ("head.",)) == float("inf")
