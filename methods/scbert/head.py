"""The classification head (editable surface): a shared per-gene projection, then fc1 → fc2 →
classes; fc1 and fc2 can be Bayesian (Stage B) and pruned by output rows — physically.

``BayesLinear``: weight μ and log-variance (clamped to [−10, 2]), bias; W = μ + σ⊙ε when
sampling, μ otherwise; KL to N(0, 1) in closed form ½Σ(μ² + σ² − log σ² − 1).
``prune_rows`` removes the output rows of fc1 with the smallest L2 norm of μ (μ, log-variance
and bias) and the matching input columns of fc2, so parameters and FLOPs really fall.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOGVAR_MIN, LOGVAR_MAX = -10.0, 2.0


class BayesLinear(nn.Module):
    def __init__(self, n_in: int, n_out: int, bayes: bool = False) -> None:
        super().__init__()
        self.weight_mu = nn.Parameter(torch.randn(n_out, n_in) * 0.02)
        self.weight_logvar = nn.Parameter(torch.full((n_out, n_in), -5.0))
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.bayes = bayes

    @property
    def out_features(self) -> int:
        return self.weight_mu.shape[0]

    def forward(self, x: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        if not (self.bayes and sample):
            return F.linear(x, self.weight_mu, self.bias)
        logvar = self.weight_logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        eps = torch.randn(self.weight_mu.shape, generator=generator, device=x.device, dtype=x.dtype)
        return F.linear(x, self.weight_mu + torch.exp(0.5 * logvar) * eps, self.bias)

    def kl(self) -> torch.Tensor:
        logvar = self.weight_logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        return 0.5 * (self.weight_mu.square() + logvar.exp() - logvar - 1.0).sum()


class Head(nn.Module):
    """features (B, L, dim) → logits (B, classes)."""

    def __init__(self, dim: int, seq_len: int, n_classes: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        self.gene_proj = nn.Linear(dim, 1)  # the Conv2d(1, 1, (1, dim)) of the upstream
        nn.init.zeros_(self.gene_proj.bias)  # half the genes' ReLUs alive at the start
        self.fc1 = BayesLinear(seq_len, hidden[0])
        self.fc2 = BayesLinear(hidden[0], hidden[1])
        self.out = nn.Linear(hidden[1], n_classes)

    def flat(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(self.gene_proj(features).squeeze(-1))

    def from_flat(self, h: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        h = F.relu(self.fc1(h, sample, generator))
        h = F.relu(self.fc2(h, sample, generator))
        return self.out(h)

    def forward(self, features: torch.Tensor, sample: bool = False) -> torch.Tensor:
        return self.from_flat(self.flat(features), sample)

    def set_bayes(self, on: bool) -> None:
        self.fc1.bayes = self.fc2.bayes = on

    def kl(self) -> torch.Tensor:
        return self.fc1.kl() + self.fc2.kl()

    @torch.no_grad()
    def clamp_logvar(self) -> None:
        for layer in (self.fc1, self.fc2):
            layer.weight_logvar.clamp_(LOGVAR_MIN, LOGVAR_MAX)

    @torch.no_grad()
    def prune_rows(self, n_remove: int) -> None:
        """Remove fc1's ``n_remove`` output rows of smallest ‖μ‖₂ and fc2's matching inputs."""
        if n_remove <= 0:
            return
        norms = self.fc1.weight_mu.norm(dim=1)
        keep = torch.sort(
            torch.argsort(norms, descending=True)[: self.fc1.out_features - n_remove]
        ).values
        fc1, fc2 = self.fc1, self.fc2
        fc1.weight_mu = nn.Parameter(fc1.weight_mu[keep].clone())
        fc1.weight_logvar = nn.Parameter(fc1.weight_logvar[keep].clone())
        fc1.bias = nn.Parameter(fc1.bias[keep].clone())
        fc2.weight_mu = nn.Parameter(fc2.weight_mu[:, keep].clone())
        fc2.weight_logvar = nn.Parameter(fc2.weight_logvar[:, keep].clone())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
