"""CellBender's "full" model and guide, with the ELBO written directly in torch (editable).

Per droplet n (x: G counts), latents and their guide:

- z ~ N(0, I_64);  q(z) = N(EncodeZ(x / Σx))
- χ = softmax(Decoder(z))
- y ∈ {0, 1}, p(y = 1) = sigmoid(prior logit);  q(y = 1) = sigmoid(p), enumerated exactly
- d_cell ~ LogNormal(log1p(cell_counts), d_std);  q = LogNormal(gated d̂, d_cell_scale), with
  log d̂ ≈ log(Σx / ε̂ − d_empty) (softplus-floored at the count crossover): the cell's own size
- d_empty ~ LogNormal(log1p(empty_counts), 0.01);  q = LogNormal(d_empty_loc, d_empty_scale)
- ε ~ Gamma(50, 50);  q = Gamma(50·ε̂, 50), ε̂ gated between the encoder's ε and 1
- globals ρ ~ Beta(1.5, 50), φ ~ Gamma(1, 5) (mean 0.2, sd 0.2);  q: Beta, Gamma params

μ = (1 − ρ)·y·ε·d_cell·χ,  λ = ε·[(1 − ρ)·χ_ambient·d_empty + ρ·χ_bar·(y·d_cell + d_empty)],
x ~ NB(μ, 1/φ) ⊛ Poisson(λ), approximated by the moment-matched NB with mean μ + λ and
r = (1/φ)((μ + λ)/μ)² (the variance μ + λ + φμ² of the convolution), or Poisson(λ) where
μ < 1e-5·λ. The ELBO of a minibatch is

    Σ_n Σ_y q_n(y)[log p(y) − log q(y) + log p(x_n | y, ·)]
      + Σ_n [log p(z) − q_n(y = 1)·log q(z) + log p(d_cell, ε) − log q(d_cell, ε)]_n
      + (B / N)[log p(ρ, φ) − log q(ρ, φ)] + regularisers

(one reparameterised sample; q(z) is drawn under y, as upstream's guide masks z by the
enumerated y, so an empty droplet's z carries no entropy term)

with the regularisers of the method notes: p_logit ~ N(prior, 2); 0.01 × the Poisson fit of
every droplet's counts to λ(y = 0, ε = 1) (ρ detached, as upstream's), weighted by q(y = 0);
soft supervision of the logit towards ±10 (sd 1, weight 10) for droplets clearly on either
side of the count crossover; the median of the sampled ε of the droplets above the count
crossover and of those below it tied to 1 (sd 0.01). The loss is the minibatch's
−(ELBO + regularisers) summed over its droplets, as Pyro's SVI returns it: ClippedAdam clips
each element of its gradient at ±10. ``tests/methods/cellbender/test_cellbender_elbo.py``
checks this ELBO against Pyro's ``TraceEnum_ELBO`` on the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from methods.cellbender.networks import Z_DIM, Decoder, EncodeNonZ, EncodeZ

# the guide's Gamma and Beta draws without argument checks (in range by construction)
_Gamma = partial(torch.distributions.Gamma, validate_args=False)
_Beta = partial(torch.distributions.Beta, validate_args=False)

EPS_PRIOR = 50.0  # ε ~ Gamma(50, 50)
RHO_PRIOR = (1.5, 50.0)
PHI_PRIOR = (1.0, 5.0)  # Gamma(concentration, rate): mean 0.2, sd 0.2
NB_SWITCH = 1e-5  # μ < 1e-5·λ: pure Poisson
EMPTY_SD = 0.01  # d_empty's prior scale (ε carries the droplets' spread)
# the constant of log Gamma(ε; 50, 50) − log Gamma(ε; 50ε̂, 50) less its lgamma(50ε̂), and of
# the global priors log Beta(ρ; 1.5, 50) + log Gamma(φ; 1, 5)
_GAMMA_CONST = -math.lgamma(EPS_PRIOR)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_PRIOR_CONST = (
    math.lgamma(RHO_PRIOR[0] + RHO_PRIOR[1]) - math.lgamma(RHO_PRIOR[0]) - math.lgamma(RHO_PRIOR[1])
    + PHI_PRIOR[0] * math.log(PHI_PRIOR[1]) - math.lgamma(PHI_PRIOR[0])
)  # fmt: skip
LOGIT_COUNT_WEIGHT = 10.0  # the cell logit's 10·sign(Δ)·√|Δ| term, Δ = log1p Σx − crossover
GATE_SHARPNESS = 50.0  # the logit's soft gates at the cell prior and the surely-empty count


@dataclass
class Constants:
    """Per-dataset constants of the model (from the priors), as tensors on the device."""

    log_cell_prior: float  # log1p(cell_counts)
    d_std: float
    log_crossover: float
    log_cell_counts: float
    log_surely_empty: float
    chi_bar: torch.Tensor  # (G,)
    log_empty_prior: float = 0.0  # log1p(empty_counts): d_empty's prior location


def eps_guide(eps_mean: torch.Tensor) -> torch.distributions.Gamma:
    """q(ε) = Gamma(50·ε̂, 50): mean ε̂ (upstream's guide)."""
    return _Gamma(EPS_PRIOR * eps_mean, torch.full_like(eps_mean, EPS_PRIOR))


@dataclass
class Guide:
    """One reparameterised draw of the guide for a minibatch."""

    z_loc: torch.Tensor
    z_scale: torch.Tensor
    z: torch.Tensor
    p_logit: torch.Tensor  # (B,)
    d_cell_loc: torch.Tensor
    d_cell: torch.Tensor
    d_empty: torch.Tensor
    eps_mean: torch.Tensor
    eps: torch.Tensor
    rho: torch.Tensor  # () global draws
    phi: torch.Tensor
    z_noise: torch.Tensor | None = None  # the standard normal draw of z: (z − loc) / scale
    log_d_cell: torch.Tensor | None = None  # log d_cell, log d_empty as drawn (before exp)
    log_d_empty: torch.Tensor | None = None


@dataclass
class Terms:
    loss: torch.Tensor  # −(ELBO + regularisers) of the minibatch, summed over its droplets
    elbo: torch.Tensor  # the ELBO of the batch (regularisers excluded), summed over droplets


def _stirling_tail(v: torch.Tensor) -> torch.Tensor:
    """lgamma(v) − [(v − ½)·log v − v + ½·log 2π]: 1/(12v) − 1/(360v³) + 1/(1260v⁵), v ≥ 10."""
    iv = 1.0 / v
    iv2 = iv * iv
    return iv * (1.0 / 12 - iv2 * (1.0 / 360 - iv2 / 1260))


def lgamma_ratio(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """lgamma(x + r) − lgamma(r) − x·log r without cancellation: by Stirling's series for
    r ≥ 10, (x + r − ½)·log1p(x / r) − x + tail(x + r) − tail(r) (error < 1e-9 in float64),
    directly below. The direct difference loses everything for the NB approximation's large r
    (r = α((μ + λ)/μ)² reaches 1e10 on genes a droplet barely expresses: float32 lgamma(r)
    is then ~1e11 with an ulp of ~1e4)."""
    big = r >= 10.0
    rb = torch.where(big, r, torch.full_like(r, 10.0))
    z = x + rb
    d_big = (z - 0.5) * torch.log1p(x / rb) - x + (_stirling_tail(z) - _stirling_tail(rb))
    rs = torch.where(big, torch.ones_like(r), r)
    d_small = torch.lgamma(x + rs) - torch.lgamma(rs) - x * torch.log(rs)
    return torch.where(big, d_big, d_small)


def nb_approx_logprob(
    x: torch.Tensor, mu: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """log NB(μ, α) ⊛ Poisson(λ) by the moment-matched NB (Poisson(λ) where μ < 1e-5·λ),
    elementwise, without the −lgamma(x + 1) term (the caller's per-droplet constant).

    The NB log-density with mean m and r = α(m/μ)², written so that it tends to the Poisson's
    x·log m − m as r grows (``lgamma_ratio``; r·log(r/(r + m)) as −r·log1p(m/r)):
    [lgamma(x + r) − lgamma(r) − x·log r] + x·log m − (x + r)·log1p(m / r). Upstream's
    lgamma(x + r) − lgamma(r) + r·log(r/(r + m)) + x·log(m/(r + m)) is the same function, but
    in float32 it is off by 0.25 nats per entry on average (5.6 at worst) against the exact
    value on simulated counts."""
    mean = mu + lam
    use_nb = mu > NB_SWITCH * lam
    mu_safe = torch.where(use_nb, mu, torch.ones_like(mu))
    r = torch.where(use_nb, alpha * (mean / mu_safe).square(), torch.ones_like(mu))
    nb = lgamma_ratio(x, r) + x * torch.log(mean) - (x + r) * torch.log1p(mean / r)
    pois = x * torch.log(lam) - lam
    return torch.where(use_nb, nb, pois)


class FullModel(nn.Module):
    """Networks and global parameters of the full model; ``loss`` computes the ELBO."""

    def __init__(
        self,
        n_genes: int,
        chi_ambient: torch.Tensor,
        empty_counts: float,
        consts: Constants,
    ) -> None:
        super().__init__()
        self.consts = consts
        self.encode_z = EncodeZ(n_genes)
        self.encode_nonz = EncodeNonZ(n_genes)
        self.decoder = Decoder(n_genes)
        self.chi_ambient_logits = nn.Parameter(torch.log(chi_ambient.clone()))
        self.d_empty_loc = nn.Parameter(torch.tensor(math.log1p(empty_counts)))
        self.d_empty_log_scale = nn.Parameter(torch.tensor(math.log(EMPTY_SD)))
        self.d_cell_log_scale = nn.Parameter(torch.tensor(math.log(0.02)))
        self.phi_log_conc = nn.Parameter(torch.tensor(math.log(2.0)))
        self.phi_log_rate = nn.Parameter(torch.tensor(math.log(10.0)))
        self.rho_log_alpha = nn.Parameter(torch.tensor(math.log(RHO_PRIOR[0])))
        self.rho_log_beta = nn.Parameter(torch.tensor(math.log(RHO_PRIOR[1])))
        self.register_buffer("chi_bar", consts.chi_bar.clone())

    # ---- the guide ---------------------------------------------------------------------
    def rho_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.rho_log_alpha.exp().clamp(1e-3, 1e3),
            self.rho_log_beta.exp().clamp(1e-3, 1e3),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The guide's deterministic part: q(z) loc/scale, p logit, ε̂, d_cell loc."""
        c = self.consts
        total = x.sum(-1).clamp(min=1.0)
        x_norm = x / total[:, None]
        z_loc, z_scale = self.encode_z(x_norm)
        log_total = torch.log1p(total)  # upstream's log counts: log1p(Σx)
        nnz = (x > 0).sum(-1).to(x.dtype)
        # closeness to d_empty: a Gaussian log-density (sd 0.1) of the counts above d_empty
        closeness = -0.5 * ((log_total - self.d_empty_loc.detach()).clamp(min=0.0) / 0.1).square()
        extra = torch.stack([log_total, torch.log1p(nnz), closeness, z_loc.norm(dim=-1)], dim=-1)
        amb = torch.softmax(self.chi_ambient_logits.detach(), -1)
        overlap = x @ (amb / amb.norm())  # the counts' projection on the ambient direction
        extra_eps = torch.stack([log_total, torch.log1p(nnz), overlap, z_loc.norm(dim=-1)], dim=-1)
        p_raw, eps_raw = self.encode_nonz(x_norm, extra, extra_eps)
        delta = log_total - c.log_crossover
        p_logit = p_raw + LOGIT_COUNT_WEIGHT * torch.sign(delta) * delta.abs().sqrt()
        # gated (sigmoid of sharpness 50 in log counts) towards +10 above the cell prior and
        # towards −10 below the surely-empty count, as upstream's encoder
        above = torch.sigmoid(GATE_SHARPNESS * (log_total - c.log_cell_prior))
        p_logit = (1 - above) * p_logit + above * 10.0
        log1p_empty = math.log1p(math.exp(c.log_surely_empty))
        beyond = torch.sigmoid(GATE_SHARPNESS * (log_total - log1p_empty))
        p_logit = beyond * p_logit - (1 - beyond) * 10.0
        eps_enc = 2.0 * torch.sigmoid(0.2 * eps_raw - math.log(3.0)) + 0.5
        q1 = torch.sigmoid(p_logit)
        eps_mean = q1 * eps_enc + (1 - q1)
        own = F.softplus(total / (eps_enc + 1e-2) - self.d_empty_loc.detach().exp()) + 1e-10
        d_loc = F.softplus(torch.log(own) - c.log_crossover) + c.log_crossover
        d_cell_loc = q1 * d_loc + (1 - q1) * c.log_cell_prior
        return z_loc, z_scale, p_logit, eps_mean, d_cell_loc

    def guide(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Guide:
        return self.sample(self.encode(x), x, generator)

    def sample(
        self, enc: tuple[torch.Tensor, ...], x: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Guide:  # fmt: skip
        """One draw of the guide from its deterministic part ``enc`` (``encode(x)``)."""
        z_loc, z_scale, p_logit, eps_mean, d_cell_loc = enc
        b = x.shape[0]

        def normal(shape: tuple[int, ...]) -> torch.Tensor:
            return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

        n_z = normal(z_loc.shape)
        z = z_loc + z_scale * n_z
        log_d = d_cell_loc + self.d_cell_log_scale.exp() * normal((b,))
        log_de = self.d_empty_loc + self.d_empty_log_scale.exp() * normal((b,))
        eps = eps_guide(eps_mean).rsample()
        ra, rb = self.rho_params()
        rho = _Beta(ra, rb).rsample()
        phi = _Gamma(self.phi_log_conc.exp(), self.phi_log_rate.exp()).rsample()
        return Guide(
            z_loc, z_scale, z, p_logit, d_cell_loc, torch.exp(log_d), torch.exp(log_de),
            eps_mean, eps, rho, phi, n_z, log_d, log_de,
        )  # fmt: skip

    # ---- the model ---------------------------------------------------------------------
    def rates(self, g: Guide) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(μ for y = 1, λ for y = 0, λ for y = 1), each (B, G)."""
        chi = torch.exp(self.decoder(g.z))
        chi_amb = torch.softmax(self.chi_ambient_logits, dim=-1)
        eps, rho = g.eps[:, None], g.rho
        mu = (1 - rho) * eps * g.d_cell[:, None] * chi
        base = eps * (
            (1 - rho) * g.d_empty[:, None] * chi_amb + rho * g.d_empty[:, None] * self.chi_bar
        )
        lam1 = base + eps * rho * g.d_cell[:, None] * self.chi_bar
        return mu, base, lam1

    def noise_rates(self, g: Guide, rate: str = "upstream") -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, λ) of a cell's posterior draw. ``full``: the cell's own background rate (y = 1,
        its ε, swapping ∝ its size). ``upstream``: what cellbender 0.4.0's posterior replays —
        its model returns the rate of the empty-droplet regulariser (y = 0, ε = 1: ambient plus
        swapping into the empty part only), which removes less and never over-shoots."""
        mu, lam0, lam1 = self.rates(g)
        return mu, (lam0 / g.eps[:, None] if rate == "upstream" else lam1)

    def elbo_terms(
        self,
        x: torch.Tensor,
        lgamma_x1: torch.Tensor,
        prior_logit: torch.Tensor,
        n_total: int,
        g: Guide,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(ELBO per droplet (B,), global ELBO term (), per-droplet pieces)."""
        c = self.consts
        mu, lam0, lam1 = self.rates(g)
        alpha = 1.0 / g.phi
        ll1 = nb_approx_logprob(x, mu, lam1, alpha).sum(-1) - lgamma_x1
        ll0 = (x * torch.log(lam0) - lam0).sum(-1) - lgamma_x1
        q1 = torch.sigmoid(g.p_logit)
        log_q1, log_q0 = F.logsigmoid(g.p_logit), F.logsigmoid(-g.p_logit)
        log_p1, log_p0 = F.logsigmoid(prior_logit), F.logsigmoid(-prior_logit)
        enum = q1 * (log_p1 - log_q1 + ll1) + (1 - q1) * (log_p0 - log_q0 + ll0)
        # continuous local latents: log p − log q at the sampled values, written out (the
        # −½·log 2π of matching Normals and the −log d Jacobians cancel; (z − loc) / scale is
        # the drawn standard normal; log scale of d_cell and d_empty are their parameters)
        n_z = g.z_noise if g.z_noise is not None else (g.z - g.z_loc) / g.z_scale
        log_d = g.log_d_cell if g.log_d_cell is not None else torch.log(g.d_cell)
        log_de = g.log_d_empty if g.log_d_empty is not None else torch.log(g.d_empty)
        # upstream's guide draws z under poutine.mask(y): with y enumerated, q(z)'s term counts
        # with weight q(y = 1), the prior's in full (an empty droplet's z shrinks to 0), so the
        # −½·log 2π of p(z) and q(z) no longer cancel
        neg_lq_z = (0.5 * n_z.square() + torch.log(g.z_scale)).sum(-1) + Z_DIM * _HALF_LOG_2PI
        z_term = -0.5 * g.z.square().sum(-1) - Z_DIM * _HALF_LOG_2PI + q1 * neg_lq_z
        s_d = self.d_cell_log_scale.exp()
        d_term = (
            -0.5 * ((log_d - c.log_cell_prior) / c.d_std).square()
            + 0.5 * ((log_d - g.d_cell_loc) / s_d).square()
            + (self.d_cell_log_scale - math.log(c.d_std))
        )
        # Gamma(50, 50) − Gamma(50ε̂, 50) at ε: the −50ε terms cancel
        log_e = torch.log(g.eps)
        e_term = (
            EPS_PRIOR * (1.0 - g.eps_mean) * (math.log(EPS_PRIOR) + log_e)
            + torch.lgamma(EPS_PRIOR * g.eps_mean) + _GAMMA_CONST
        )  # fmt: skip
        de_term = (
            -0.5 * ((log_de - c.log_empty_prior) / EMPTY_SD).square()
            + 0.5 * ((log_de - self.d_empty_loc) / self.d_empty_log_scale.exp()).square()
            + (self.d_empty_log_scale - math.log(EMPTY_SD))
        )
        local = enum + z_term + d_term + e_term + de_term
        ra, rb = self.rho_params()
        log_rho, log_1m_rho = torch.log(g.rho), torch.log1p(-g.rho)
        conc, log_rate = self.phi_log_conc.exp(), self.phi_log_rate
        glob = (
            (RHO_PRIOR[0] - ra) * log_rho + (RHO_PRIOR[1] - rb) * log_1m_rho
            + (torch.lgamma(ra) + torch.lgamma(rb) - torch.lgamma(ra + rb))
            + (log_rate.exp() - PHI_PRIOR[1]) * g.phi
            - (conc - PHI_PRIOR[0]) * torch.log(g.phi)
            - conc * log_rate + torch.lgamma(conc) + _PRIOR_CONST
        )  # fmt: skip
        # the empty-droplet regulariser's Poisson rate, as upstream's: y = 0, ε = 1, ρ detached —
        # the rate the posterior replays (``noise_rates``), so d_empty, ρ and χ_ambient are fitted
        # to the empties at the ε the posterior uses
        r = g.rho.detach()
        chi_amb = torch.softmax(self.chi_ambient_logits, dim=-1)
        lam_reg = g.d_empty[:, None] * ((1 - r) * chi_amb + r * self.chi_bar)
        ll_reg = (x * torch.log(lam_reg) - lam_reg).sum(-1) - lgamma_x1
        pieces = {
            "ll_reg": ll_reg, "q1": q1, "log_total": torch.log(x.sum(-1).clamp(min=1.0))
        }  # fmt: skip
        return local, glob, pieces

    def loss(
        self,
        x: torch.Tensor,
        lgamma_x1: torch.Tensor,
        prior_logit: torch.Tensor,
        n_total: int,
        generator: torch.Generator | None = None,
    ) -> Terms:
        """−(ELBO + regularisers) of the minibatch, summed over its droplets (one guide draw):
        Pyro's SVI loss, whose gradient ClippedAdam clips element by element."""
        c = self.consts
        g = self.guide(x, generator)
        local, glob, pc = self.elbo_terms(x, lgamma_x1, prior_logit, n_total, g)
        b = x.shape[0]
        elbo = local.sum() + glob * (b / n_total)
        # Normal log-densities written out: N(p; prior, 2), 10 × N(p; ±10, 1) far from the
        # crossover, N(median ε̂; 1, 0.01) for cells and for empties
        reg = (-0.125 * (g.p_logit - prior_logit.clamp(-10, 10)).square()).sum() - b * (
            math.log(2.0) + _HALF_LOG_2PI
        )
        reg = reg + 0.01 * ((1 - pc["q1"]) * pc["ll_reg"]).sum()
        far = (pc["log_total"] - c.log_crossover).abs() > 1.0
        target = torch.where(pc["log_total"] > c.log_crossover, 10.0, -10.0)
        sup = -0.5 * (g.p_logit - target).square() - _HALF_LOG_2PI
        reg = reg + 10.0 * (sup * far).sum()
        # the median sampled ε of probable cells (counts above the crossover) and of probable
        # empties tied to 1
        cells = pc["log_total"] >= c.log_crossover
        for mask in (cells, ~cells):
            if int(mask.sum()) > 0:
                med = g.eps[mask].median()
                reg = reg - 0.5 * ((med - 1.0) / 0.01).square() - (math.log(0.01) + _HALF_LOG_2PI)
        return Terms(loss=-(elbo + reg), elbo=elbo.detach())
