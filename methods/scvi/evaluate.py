"""scVI evaluation (read-only surface): latent means and the held-out ELBO, computed from the
trained parameters by this module's own implementation of the model — never by the editable
``model.py`` — so the code under optimization does not grade itself.

The parameters are the model's ``state_dict`` (names and shapes are the contract between the
editable model and this module). Everything runs on the CPU in float64: the figures do not
depend on the device or on the training precision. The ELBO uses one reparameterised sample
per cell from a generator seeded by the method's seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

VAR_EPS = 1e-4
BN_EPS = 1e-3


def _t(state: Mapping[str, Any], name: str) -> torch.Tensor:
    return torch.as_tensor(state[name]).detach().to("cpu", torch.float64)


def _stack(
    state: Mapping[str, Any], prefix: str, x: torch.Tensor, onehot: torch.Tensor | None
) -> torch.Tensor:
    """Eval-mode FC stack: (Linear [+ one-hot covariates]) → BatchNorm (running stats) → ReLU."""
    i = 0
    while f"{prefix}.linears.{i}.linear.weight" in state:
        lin = f"{prefix}.linears.{i}"
        y = x @ _t(state, f"{lin}.linear.weight").T + _t(state, f"{lin}.linear.bias")
        if f"{lin}.cov" in state and onehot is not None:
            y = y + onehot @ _t(state, f"{lin}.cov").T
        bn = f"{prefix}.norms.{i}"
        mean, var = _t(state, f"{bn}.running_mean"), _t(state, f"{bn}.running_var")
        y = (y - mean) / torch.sqrt(var + BN_EPS) * _t(state, f"{bn}.weight") + _t(
            state, f"{bn}.bias"
        )
        x = torch.relu(y)
        i += 1
    if i == 0:
        raise KeyError(f"no layers under '{prefix}' in the parameters")
    return x


def _gaussian(state: Mapping[str, Any], head: str, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = h @ _t(state, f"{head}.linear.weight").T + _t(state, f"{head}.linear.bias")
    m, log_v = out.chunk(2, dim=-1)
    return m, torch.exp(log_v) + VAR_EPS


def _onehot(batch: torch.Tensor, n_batch: int) -> torch.Tensor | None:
    if n_batch <= 1:
        return None
    return torch.nn.functional.one_hot(batch.to(torch.int64), n_batch).to(torch.float64)


def _log_nb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(x; μ, θ) − lgamma... (textbook formula, without −lgamma(x + 1))."""
    theta = torch.exp(log_theta)
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    return (
        theta * (log_theta - log_theta_mu)
        + x * (log_mu - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
    )


def evaluate(
    state: Mapping[str, Any],
    shape: Any,
    x: torch.Tensor,
    batch: torch.Tensor,
    log_lib: torch.Tensor,
    lgamma_x1: torch.Tensor,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Latent means (n, n_latent) and the mean held-out ELBO (1,) of cells ``x``."""
    x = x.detach().to("cpu", torch.float64)
    batch = batch.detach().cpu()
    log_lib = log_lib.detach().to("cpu", torch.float64)
    lgamma_x1 = lgamma_x1.detach().to("cpu", torch.float64)
    onehot = _onehot(batch, shape.n_batch)
    x_in = torch.log1p(x) if shape.log_variational else x
    enc_cov = onehot if shape.encode_covariates else None
    qz_m, qz_v = _gaussian(state, "z_head", _stack(state, "encoder", x_in, enc_cov))
    gen = torch.Generator().manual_seed(int(seed) + 1)
    z = qz_m + qz_v.sqrt() * torch.randn(qz_m.shape, generator=gen, dtype=torch.float64)
    kl = 0.5 * (qz_v + qz_m**2 - 1.0 - torch.log(qz_v)).sum(-1)
    if shape.use_observed_lib_size:
        ell = log_lib.unsqueeze(-1)
    else:
        ql_m, ql_v = _gaussian(state, "l_head", _stack(state, "l_encoder", x_in, enc_cov))
        ell = ql_m + ql_v.sqrt() * torch.randn(ql_m.shape, generator=gen, dtype=torch.float64)
        pm = _t(state, "library_log_means")[batch]
        pv = _t(state, "library_log_vars")[batch]
        kl = kl + (
            0.5 * (torch.log(pv) - torch.log(ql_v) + (ql_v + (ql_m - pm) ** 2) / pv - 1)
        ).sum(-1)
    h = _stack(state, "decoder", z, onehot)
    h = h @ _t(state, "px_head.weight").T + _t(state, "px_head.bias")
    g = shape.n_genes
    log_mu = torch.log_softmax(h[:, :g], dim=-1) + ell
    px_r = _t(state, "px_r")
    log_theta = px_r if px_r.dim() == 1 else (onehot @ px_r.T if onehot is not None else px_r[:, 0])
    ll_nb = _log_nb(x, log_mu, log_theta)
    if shape.gene_likelihood == "zinb":
        pi = h[:, g : 2 * g]
        log_nb0 = torch.exp(log_theta) * (log_theta - torch.logaddexp(log_theta, log_mu))
        zero = torch.logaddexp(pi, log_nb0) - torch.nn.functional.softplus(pi)
        nonzero = ll_nb - torch.nn.functional.softplus(pi)
        ll = torch.where(x < 0.5, zero, nonzero)
    else:
        ll = ll_nb
    rec = -(ll.sum(-1) - lgamma_x1)
    elbo = (rec + kl).mean().reshape(1)
    if not math.isfinite(float(elbo)):
        elbo = torch.full((1,), float("nan"), dtype=torch.float64)
    return {"latent": qz_m, "elbo_heldout": elbo}
