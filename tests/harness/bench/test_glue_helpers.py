"""The helpers every method glue shares (``harness.api.seed_everything`` and ``log``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from harness.api import log, seed_everything


def test_seed_everything_seeds_torch_numpy_and_random() -> None:
    seed_everything(2**32 + 7)  # NumPy takes the seed mod 2**32
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2**32 + 7)
    np.random.seed(7)
    random.seed(2**32 + 7)
    assert torch.equal(first[0], torch.rand(3))
    assert np.array_equal(first[1], np.random.rand(3)) and first[2] == random.random()
    seed_everything(1)
    assert not torch.equal(first[0], torch.rand(3))


def test_log_writes_one_named_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    log("scvi", "300 cells")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "scvi: 300 cells\n")
