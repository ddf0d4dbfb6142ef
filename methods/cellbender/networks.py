"""CellBender's networks (editable): the z encoder, the encoder of the other latents (the cell
logit and ε branches) and the decoder, sized as upstream's defaults."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Z_DIM = 64
HIDDEN = 512
N_EXTRA = 4  # extra features: log1p Σx, log1p nnz, closeness to d_empty (ε: ambient overlap), ‖z‖
BN_MOMENTUM, BN_EPS = 0.01, 1e-3  # the decoder's BatchNorm, as upstream's


class EncodeZ(nn.Module):
    """x / Σx → Linear(G→512) + Softplus → (loc, scale) of q(z)."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_genes, HIDDEN)
        self.loc = nn.Linear(HIDDEN, Z_DIM)
        self.log_scale = nn.Linear(HIDDEN, Z_DIM)

    def forward(self, x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.softplus(self.hidden(x_norm))
        return self.loc(h), torch.exp(self.log_scale(h).clamp(max=10.0))


class Branch(nn.Module):
    """(G + 4) → 512 BN Softplus → (512 + 4) → 512 BN Softplus → (512 + 4) → 1, the 4 extra
    features concatenated at every layer."""

    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(n_in + N_EXTRA, HIDDEN)
        self.b1 = nn.BatchNorm1d(HIDDEN)
        self.l2 = nn.Linear(HIDDEN + N_EXTRA, HIDDEN)
        self.b2 = nn.BatchNorm1d(HIDDEN)
        self.out = nn.Linear(HIDDEN + N_EXTRA, 1)

    def forward(self, h: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        h = F.softplus(self.b1(self.l1(torch.cat([h, extra], dim=-1))))
        h = F.softplus(self.b2(self.l2(torch.cat([h, extra], dim=-1))))
        return self.out(torch.cat([h, extra], dim=-1)).squeeze(-1)


class EpsBranch(nn.Module):
    """(G + 4) → 512 BN Softplus → 512 BN Softplus → 1, its 4 extra features (log1p Σx,
    log1p nnz, the counts' projection on the ambient profile, ‖z‖) at the input only."""

    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in + N_EXTRA, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.Softplus(),
            nn.Linear(HIDDEN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.Softplus(),
            nn.Linear(HIDDEN, 1),
        )  # fmt: skip

    def forward(self, h: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([extra, h], dim=-1)).squeeze(-1)


class EncodeNonZ(nn.Module):
    """log1p(1e4·x/Σx) → BatchNorm → Dropout(0.5) → the p (cell logit) and ε branches."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_genes)
        self.drop = nn.Dropout(0.5)
        self.p = Branch(n_genes)
        self.eps = EpsBranch(n_genes)

    def forward(
        self, x_norm: torch.Tensor, extra: torch.Tensor, extra_eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(self.norm(torch.log1p(1e4 * x_norm)))
        return self.p(h, extra), self.eps(h, extra_eps)


class Decoder(nn.Module):
    """z → Linear(64→512) BN ReLU → Linear(512→G) → log-softmax (log χ); the BatchNorm's
    running statistics move by 0.01 a step (eps 1e-3), as upstream's decoder."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(Z_DIM, HIDDEN)
        self.norm = nn.BatchNorm1d(HIDDEN, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.out = nn.Linear(HIDDEN, n_genes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.out(F.relu(self.norm(self.hidden(z)))), dim=-1)
