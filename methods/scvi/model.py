"""The scVI variational autoencoder (editable surface): encoder, decoder, NB/ZINB likelihoods.

Implemented from the model description (Lopez et al. 2018; scvi-tools' documented defaults):
log1p input, Linear → BatchNorm(momentum 0.01, eps 1e-3) → ReLU → Dropout blocks, a Gaussian
q(z|x) with variance exp(·) + 1e-4, observed (or learned) log library size, a softmax decoder
and a per-gene (or per gene-batch) inverse dispersion θ = exp(px_r). The batch one-hot enters
the decoder's first layer (every hidden layer with deep injection) and, optionally, the encoder.

The hot path works in log space: log μ = ℓ + log_softmax(h), and Σ_g lgamma(x + 1) is a
per-cell constant computed once when the data are staged (``lgamma_x1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.scvi.likelihood import Nonzeros, nb_loglik

VAR_EPS = 1e-4  # added to the encoder variances
NB_EPS = 1e-8  # inside the logs of the reference NB/ZINB formulas


# ---- likelihoods -----------------------------------------------------------------------------
def log_nb(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Elementwise log NB(x; mean mu, inverse dispersion theta) (the textbook formula)."""
    log_theta_mu = torch.log(theta + mu + NB_EPS)
    return (
        theta * (torch.log(theta + NB_EPS) - log_theta_mu)
        + x * (torch.log(mu + NB_EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def log_zinb(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, pi_logits: torch.Tensor
) -> torch.Tensor:
    """Elementwise log ZINB: dropout probability sigmoid(pi_logits) mixed with NB(mu, theta)."""
    log_nb0 = theta * (torch.log(theta + NB_EPS) - torch.log(theta + mu + NB_EPS))
    zero = torch.logaddexp(pi_logits, log_nb0) - F.softplus(pi_logits)
    nonzero = -F.softplus(pi_logits) + log_nb(x, mu, theta)
    return torch.where(x < 0.5, zero, nonzero)


def reconstruction_ll(
    x: torch.Tensor,
    log_mu: torch.Tensor,
    theta: torch.Tensor,
    pi_logits: torch.Tensor | None,
    lgamma_x1: torch.Tensor,
) -> torch.Tensor:
    """Per-cell Σ_g log p(x | μ, θ[, π]) from log μ, by autograd (the reference path).

    With a = log μ − log θ and sp = softplus(a) = log(θ + μ) − log θ:
    log NB = −θ·sp + x·(a − sp) + lgamma(x + θ) − lgamma(θ) − lgamma(x + 1), and the ZINB
    adds −softplus(π) everywhere and softplus(π − log NB(0)) where x = 0.
    """
    log_theta = torch.log(theta)
    a = log_mu - log_theta
    sp = F.softplus(a)
    log_nb0 = -theta * sp
    ll = log_nb0 + x * (a - sp) + (torch.lgamma(x + theta) - torch.lgamma(theta))
    if pi_logits is not None:
        zero = (x == 0).to(x.dtype)
        ll = ll - F.softplus(pi_logits) + zero * F.softplus(pi_logits - log_nb0)
    return ll.sum(dim=-1) - lgamma_x1


def kl_normal(
    m: torch.Tensor, v: torch.Tensor, prior_m: torch.Tensor | float, prior_v: torch.Tensor | float
) -> torch.Tensor:
    """KL(N(m, v) ‖ N(prior_m, prior_v)) summed over the last dimension."""
    return 0.5 * (
        torch.log(torch.as_tensor(prior_v, dtype=m.dtype, device=m.device))
        - torch.log(v)
        + (v + (m - prior_m) ** 2) / prior_v
        - 1.0
    ).sum(dim=-1)


# ---- layers ----------------------------------------------------------------------------------
class CovLinear(nn.Module):
    """Linear(n_in + n_cov → n_out) on [x, one-hot], without building the concatenation."""

    def __init__(self, n_in: int, n_out: int, n_cov: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.cov = nn.Parameter(torch.empty(n_out, n_cov)) if n_cov else None
        bound = 1.0 / math.sqrt(n_in + n_cov)  # nn.Linear's default init for the joint layer
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            self.linear.bias.uniform_(-bound, bound)
            if self.cov is not None:
                self.cov.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        y = self.linear(x)
        if self.cov is not None and onehot is not None:
            y = torch.addmm(y, onehot, self.cov.t())
        return y


class FCStack(nn.Module):
    """n_layers × (CovLinear → BatchNorm1d → ReLU → Dropout); covariates into the first layer
    and, with ``inject_all``, into every layer."""

    def __init__(
        self, n_in: int, n_hidden: int, n_cov: int, n_layers: int, dropout: float, inject_all: bool
    ) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(n_layers):
            cov = n_cov if (i == 0 or inject_all) else 0
            self.linears.append(CovLinear(n_in if i == 0 else n_hidden, n_hidden, cov))
            self.norms.append(nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms, strict=True):
            x = F.relu(norm(linear(x, onehot)))
            if self.dropout is not None:
                x = self.dropout(x)
        return x


class GaussianHead(nn.Module):
    """Mean and variance (exp(·) + 1e-4) of a diagonal Gaussian, one fused Linear."""

    def __init__(self, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.n_out = n_out
        self.linear = nn.Linear(n_hidden, 2 * n_out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, log_v = self.linear(h).split(self.n_out, dim=-1)
        return m, torch.exp(log_v) + VAR_EPS


# ---- the VAE ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VAEShape:
    n_genes: int
    n_batch: int
    n_hidden: int = 128
    n_latent: int = 10
    n_layers: int = 1
    dropout_rate: float = 0.1
    dispersion: str = "gene"  # gene | gene-batch
    gene_likelihood: str = "zinb"  # zinb | nb
    log_variational: bool = True
    use_observed_lib_size: bool = True
    encode_covariates: bool = False
    deeply_inject_covariates: bool = True


@dataclass
class Losses:
    """Minibatch totals (summed over cells) and the scalar objective."""

    loss: torch.Tensor  # mean over cells of rec + kl_weight·kl_z + kl_l
    reconstruction: torch.Tensor  # Σ_cells −log p(x | z, ℓ)
    kl_local: torch.Tensor  # Σ_cells KL_z + KL_ℓ (unweighted)


class VAE(nn.Module):
    """scVI's VAE. ``library_log_means/vars`` (per batch) are needed for the learned library."""

    def __init__(
        self,
        shape: VAEShape,
        library_log_means: torch.Tensor | None = None,
        library_log_vars: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        s = self.shape = shape
        n_cov = s.n_batch if s.n_batch > 1 else 0
        enc_cov = n_cov if s.encode_covariates else 0
        self.n_cov = n_cov
        self.encoder = FCStack(
            s.n_genes, s.n_hidden, enc_cov, s.n_layers, s.dropout_rate, s.deeply_inject_covariates
        )
        self.z_head = GaussianHead(s.n_hidden, s.n_latent)
        if not s.use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                raise ValueError("a learned library size needs library_log_means/vars")
            self.l_encoder = FCStack(s.n_genes, s.n_hidden, enc_cov, 1, s.dropout_rate, True)
            self.l_head = GaussianHead(s.n_hidden, 1)
            self.register_buffer("library_log_means", library_log_means.reshape(-1, 1).clone())
            self.register_buffer("library_log_vars", library_log_vars.reshape(-1, 1).clone())
        self.decoder = FCStack(
            s.n_latent, s.n_hidden, n_cov, s.n_layers, 0.0, s.deeply_inject_covariates
        )
        n_heads = 2 if s.gene_likelihood == "zinb" else 1
        self.px_head = nn.Linear(s.n_hidden, n_heads * s.n_genes)  # scale logits [, dropout]
        n_r = s.n_batch if s.dispersion == "gene-batch" else 1
        self.px_r = nn.Parameter(torch.randn(s.n_genes, n_r).squeeze(-1))
        self.fused = True  # the hand-written likelihood (False: autograd reference path)

    def onehot(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        if not self.n_cov:
            return None
        eye = torch.eye(self.shape.n_batch, dtype=dtype, device=batch.device)
        return eye.index_select(0, batch)

    def encode(
        self, x: torch.Tensor, onehot: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x): mean and variance."""
        x_in = torch.log(x + 1.0) if self.shape.log_variational else x  # log1p, faster on CPU
        cov = onehot if self.shape.encode_covariates else None
        return self.z_head(self.encoder(x_in, cov))

    def log_theta(self, onehot: torch.Tensor | None) -> torch.Tensor:
        """log inverse dispersion px_r: (G,) per gene, or (B, G) per gene and batch."""
        if self.px_r.dim() == 1:
            return self.px_r
        if onehot is None:
            return self.px_r[:, 0]
        return onehot @ self.px_r.t()

    def forward(
        self,
        x: torch.Tensor,
        batch: torch.Tensor,
        log_lib: torch.Tensor,
        lgamma_x1: torch.Tensor,
        kl_weight: float,
        generator: torch.Generator | None = None,
        nz: Nonzeros | None = None,
    ) -> Losses:
        """The ELBO terms of a minibatch: x (B, G) counts, batch (B,) codes, log library (B,)."""
        s = self.shape
        onehot = self.onehot(batch, x.dtype)
        qz_m, qz_v = self.encode(x, onehot)
        eps = torch.randn(qz_m.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = qz_m + qz_v.sqrt() * eps
        kl_z = kl_normal(qz_m, qz_v, 0.0, 1.0)
        if s.use_observed_lib_size:
            ell = log_lib.unsqueeze(-1)
            kl_l = kl_z.new_zeros(())
        else:
            x_in = torch.log(x + 1.0) if s.log_variational else x
            ql_m, ql_v = self.l_head(self.l_encoder(x_in, onehot if s.encode_covariates else None))
            eps_l = torch.randn(ql_m.shape, generator=generator, device=x.device, dtype=x.dtype)
            ell = ql_m + ql_v.sqrt() * eps_l
            prior_m = self.library_log_means[batch]
            prior_v = self.library_log_vars[batch]
            kl_l = kl_normal(ql_m, ql_v, prior_m, prior_v)
        h = self.px_head(self.decoder(z, onehot))
        zinb = s.gene_likelihood == "zinb"
        log_theta = self.log_theta(onehot)
        if self.fused:
            ll = nb_loglik(h, ell, log_theta, x, nz, zinb) - lgamma_x1.sum()
        else:
            scale_logits, pi_logits = h.split(s.n_genes, dim=-1) if zinb else (h, None)
            log_mu = torch.log_softmax(scale_logits, dim=-1) + ell
            theta = torch.exp(log_theta)
            ll = reconstruction_ll(x, log_mu, theta, pi_logits, lgamma_x1).sum()
        kl_z_sum, kl_l_sum = kl_z.sum(), kl_l.sum()
        loss = (kl_z_sum * kl_weight + kl_l_sum - ll) / x.shape[0]
        return Losses(loss=loss, reconstruction=-ll, kl_local=kl_z_sum + kl_l_sum)

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """E[z | x]: the q(z) means (call in eval mode)."""
        return self.encode(x, self.onehot(batch, x.dtype))[0]
