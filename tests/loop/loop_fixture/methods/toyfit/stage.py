"""Staging (editable surface, called by ``prepare``): the arrays as tensors."""

from dataclasses import dataclass

import torch


@dataclass
class Staged:
    x: torch.Tensor
    y: torch.Tensor


def stage(x, y) -> Staged:
    return Staged(torch.from_numpy(x), torch.from_numpy(y))
