"""Canonical hashing: order, dtype and rounding invariances, and real sensitivity."""

import hashlib

import numpy as np
import pytest
import torch

from harness.bench.hashing import canonical_array, output_hash, parity_hash


def _outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"weights": rng.random((20, 4)), "converged": rng.random(20) > 0.5}


def test_key_order_does_not_matter():
    out = _outputs()
    assert output_hash(out) == output_hash(dict(reversed(list(out.items()))))


def test_float32_and_tensor_inputs_hash_like_float64_after_rounding():
    w = np.round(np.random.default_rng(1).random((10, 3)), 4)  # exactly representable-ish
    a = output_hash({"w": w}, decimals=4)
    assert a == output_hash({"w": w.astype(np.float32)}, decimals=4)
    assert a == output_hash({"w": torch.from_numpy(w)}, decimals=4)


def test_rounding_absorbs_noise_below_decimals_only():
    w = np.full((5, 2), 0.25)
    assert output_hash({"w": w}) == output_hash({"w": w + 1e-12})
    assert output_hash({"w": w}) != output_hash({"w": w + 1e-6})


def test_negative_zero_and_nan_are_canonical():
    a = np.array([0.0, np.nan])
    b = np.array([-0.0, -np.nan])
    assert output_hash({"x": a}) == output_hash({"x": b})
    assert canonical_array(np.array([-1e-12]), 8).tobytes() == np.zeros(1).tobytes()


def test_bool_and_int_are_int64():
    assert canonical_array(np.array([True, False]), 8).dtype == np.int64
    assert output_hash({"c": np.array([1, 0])}) == output_hash({"c": np.array([True, False])})


def test_name_and_shape_enter_the_digest():
    w = np.arange(6.0)
    assert output_hash({"a": w}) != output_hash({"b": w})
    assert output_hash({"a": w}) != output_hash({"a": w.reshape(2, 3)})
    # non-contiguous views hash like their contiguous copy
    m = np.arange(12.0).reshape(3, 4)
    assert output_hash({"m": m.T}) == output_hash({"m": np.ascontiguousarray(m.T)})


def test_subset_of_outputs():
    out = _outputs()
    assert output_hash(out, names=["weights"]) == output_hash({"weights": out["weights"]})
    with pytest.raises(KeyError):
        output_hash(out, names=["missing"])


def test_parity_hash_is_the_peer_recipe():
    w = np.random.default_rng(3).random((7, 3))
    expected = hashlib.md5(np.round(w, 8).tobytes()).hexdigest()[:16]
    assert parity_hash(w) == expected
    assert len(output_hash({"w": w})) == 16


def test_zero_dimensional_outputs_hash_and_differ_from_shape_one():
    zero_d = output_hash({"sigma": torch.tensor(0.84, dtype=torch.float64)})
    assert zero_d == output_hash({"sigma": np.float64(0.84)})
    assert zero_d != output_hash({"sigma": np.array([0.84])})  # shape is in the digest
    assert output_hash({"x": np.asarray(np.nan)}) == output_hash({"x": np.asarray(-np.nan)})
