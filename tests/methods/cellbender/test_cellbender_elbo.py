"""CellBender's hand-written ELBO equals Pyro's TraceEnum_ELBO on the same model, parameters
and samples (y enumerated in the guide; Pyro is a test-only dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.cellbender.model import (
    EMPTY_SD,
    EPS_PRIOR,
    PHI_PRIOR,
    RHO_PRIOR,
    Z_DIM,
    Constants,
    FullModel,
    Guide,
    nb_approx_logprob,
)

pyro = pytest.importorskip("pyro")
dist = pytest.importorskip("pyro.distributions")


class NBApprox(dist.TorchDistribution):
    """NB(μ, α) ⊛ Poisson(λ) by the moment-matched NB, summed over genes (event dim 1)."""

    arg_constraints: dict = {}
    support = dist.constraints.independent(dist.constraints.nonnegative_integer, 1)

    def __init__(self, mu, lam, alpha, lgamma_x1):
        self.mu, self.lam, self.alpha, self.lgx = mu, lam, alpha, lgamma_x1
        batch = torch.broadcast_shapes(mu.shape[:-1], lam.shape[:-1])
        super().__init__(batch_shape=batch, event_shape=mu.shape[-1:], validate_args=False)

    def log_prob(self, x):
        return nb_approx_logprob(x, self.mu, self.lam, self.alpha).sum(-1) - self.lgx


def _setup(b: int = 24, g: int = 30, seed: int = 0):
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    x = torch.as_tensor(
        gen.poisson(
            np.r_[np.full(b // 2, 20.0), np.full(b - b // 2, 0.5)][:, None]
            * gen.dirichlet(np.ones(g), size=b)
            * g
        ),
        dtype=torch.float64,
    )
    consts = Constants(
        log_cell_prior=math.log1p(600.0), d_std=0.2, log_crossover=math.log(80.0),
        log_cell_counts=math.log(600.0), log_surely_empty=math.log(10.0),
        chi_bar=torch.full((g,), 1.0 / g, dtype=torch.float64),
        log_empty_prior=math.log1p(12.0),
    )  # fmt: skip
    chi_amb = torch.as_tensor(gen.dirichlet(np.ones(g)), dtype=torch.float64)
    model = FullModel(g, chi_amb, 12.0, consts).double().eval()
    lgx = torch.lgamma(x + 1).sum(-1)
    prior = torch.as_tensor(gen.normal(0, 2, b), dtype=torch.float64)
    return model, x, lgx, prior


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_elbo_equals_pyro_traceenum_elbo(float64):
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    model, x, lgx, prior = _setup()
    b, n_total = x.shape[0], 500
    c = model.consts

    def pyro_model(x, lgx, prior):
        with poutine.scale(scale=b / n_total):
            rho = pyro.sample("rho", dist.Beta(*RHO_PRIOR))
            phi = pyro.sample("phi", dist.Gamma(*PHI_PRIOR))
        chi_amb = torch.softmax(model.chi_ambient_logits, -1)
        with pyro.plate("droplets", b):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([b, Z_DIM]).to_event(1))
            y = pyro.sample("y", dist.Bernoulli(logits=prior))
            d_cell = pyro.sample("d_cell", dist.LogNormal(c.log_cell_prior, c.d_std))
            d_empty = pyro.sample("d_empty", dist.LogNormal(c.log_empty_prior, EMPTY_SD))
            eps = pyro.sample("eps", dist.Gamma(EPS_PRIOR, EPS_PRIOR))
            chi = torch.exp(model.decoder(z))
            ye, de, dc, ee = y[..., None], d_empty[..., None], d_cell[..., None], eps[..., None]
            mu = (1 - rho) * ye * ee * dc * chi
            lam = ee * ((1 - rho) * chi_amb * de + rho * model.chi_bar * (ye * dc + de))
            pyro.sample("obs", NBApprox(mu, lam, 1.0 / phi, lgx), obs=x)

    def pyro_guide(x, lgx, prior):
        ra, rb = model.rho_params()
        with poutine.scale(scale=b / n_total):
            pyro.sample("rho", dist.Beta(ra, rb))
            pyro.sample("phi", dist.Gamma(model.phi_log_conc.exp(), model.phi_log_rate.exp()))
        z_loc, z_scale, p_logit, eps_mean, d_cell_loc = model.encode(x)
        with pyro.plate("droplets", b):
            y = pyro.sample("y", dist.Bernoulli(logits=p_logit), infer={"enumerate": "parallel"})
            with poutine.mask(mask=y.bool()):  # upstream's guide: z drawn under y
                pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("d_cell", dist.LogNormal(d_cell_loc, model.d_cell_log_scale.exp()))
            pyro.sample("d_empty", dist.LogNormal(model.d_empty_loc, model.d_empty_log_scale.exp()))
            pyro.sample(
                "eps", dist.Gamma(EPS_PRIOR * eps_mean, torch.full_like(eps_mean, EPS_PRIOR))
            )

    pyro.set_rng_seed(3)
    recorded = poutine.trace(pyro_guide).get_trace(x, lgx, prior)
    recorded.remove_node("y")  # y is enumerated, the continuous draws are replayed
    fixed_guide = config_enumerate(poutine.replay(pyro_guide, trace=recorded), "parallel")
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    with torch.no_grad():
        pyro_value = -float(elbo.loss(pyro_model, fixed_guide, x, lgx, prior))
        z_loc, z_scale, p_logit, eps_mean, d_cell_loc = model.encode(x)
        v = {
            name: recorded.nodes[name]["value"]
            for name in ("z", "d_cell", "d_empty", "eps", "rho", "phi")
        }
        g = Guide(z_loc, z_scale, v["z"], p_logit, d_cell_loc, v["d_cell"], v["d_empty"],
                  eps_mean, v["eps"], v["rho"], v["phi"])  # fmt: skip
        local, glob, _ = model.elbo_terms(x, lgx, prior, n_total, g)
        ours = float(local.sum() + glob * (b / n_total))
    assert ours == pytest.approx(pyro_value, rel=1e-10, abs=1e-8)


def test_nb_approximation_matches_the_convolutions_moments(float64):
    """NB(μ, α) ⊛ Poisson(λ) ≈ the NB with the same mean μ + λ and variance μ + λ + μ²/α
    (upstream's r = α((μ + λ)/μ)²); Poisson(λ) where μ < 1e-5·λ."""
    x = torch.arange(0, 4000, dtype=torch.float64)
    for mu, lam, alpha in ((0.3, 2.0, 5.0), (5.0, 1.0, 5.0), (40.0, 3.0, 2.0), (200.0, 20.0, 4.0)):
        m, la, a = (torch.tensor(v) for v in (mu, lam, alpha))
        p = torch.exp(nb_approx_logprob(x, m, la, a) - torch.lgamma(x + 1))
        mean = float((p * x).sum())
        var = float((p * (x - mean) ** 2).sum())
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)
        assert mean == pytest.approx(mu + lam, rel=1e-6)
        assert var == pytest.approx(mu + lam + mu**2 / alpha, rel=1e-6)
    p = torch.exp(
        nb_approx_logprob(x[:50], torch.tensor(1e-7), torch.tensor(3.0), torch.tensor(5.0))
    )
    poisson = torch.distributions.Poisson(3.0).log_prob(x[:50]) + torch.lgamma(x[:50] + 1)
    assert torch.allclose(torch.log(p), poisson)


def test_nb_approximation_is_accurate_in_float32():
    """The NB approximation in float32 is within 1e-3 nats of its exact value on counts whose
    r = α((μ + λ)/μ)² spans 1 to 1e10 — where lgamma(x + r) − lgamma(r), as upstream writes
    it, loses every digit (exact: Σ_{k < x} log(r + k) by math.fsum, in float64)."""
    rng = np.random.default_rng(0)
    n = 400
    mu = np.exp(rng.uniform(-11, 6, n))
    lam = np.exp(rng.uniform(-3, 3, n))
    alpha = 5.0
    x = rng.poisson(mu + lam).astype(np.float64)
    exact = []
    for xi, mi, li in zip(x, mu, lam, strict=True):
        m = mi + li
        r = alpha * (m / mi) ** 2
        ratio = math.fsum(math.log(r + k) for k in range(int(xi)))
        exact.append(ratio - r * math.log1p(m / r) + xi * (math.log(m) - math.log(r + m)))
    got = nb_approx_logprob(*(torch.tensor(v, dtype=torch.float32) for v in (x, mu, lam)),
                            torch.tensor(alpha, dtype=torch.float32))  # fmt: skip
    use_nb = mu > 1e-5 * lam
    err = np.abs(got.double().numpy() - np.asarray(exact))[use_nb]
    assert use_nb.sum() > 300 and err.max() < 1e-3, err.max()
