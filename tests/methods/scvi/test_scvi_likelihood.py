"""scVI likelihoods: NB/ZINB against scipy and torch.distributions; the fused path's gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from methods.scvi.likelihood import Nonzeros, _gene_sum, _gene_sum_dense, digamma, nb_loglik
from methods.scvi.model import VAE, VAEShape, log_nb, log_zinb, reconstruction_ll


def _case(seed: int = 0, b: int = 6, g: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mu = torch.rand(b, g, generator=gen, dtype=torch.float64) * 20 + 0.05
    theta = torch.rand(b, g, generator=gen, dtype=torch.float64) * 5 + 0.1
    x = torch.poisson(mu * 0.7, generator=gen)
    return x, mu, theta


def test_nb_matches_scipy_and_torch_distributions() -> None:
    x, mu, theta = _case()
    ours = log_nb(x, mu, theta).numpy()
    ref = stats.nbinom.logpmf(x.numpy(), n=theta.numpy(), p=(theta / (theta + mu)).numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    dist = torch.distributions.NegativeBinomial(total_count=theta, logits=mu.log() - theta.log())
    np.testing.assert_allclose(ours, dist.log_prob(x).numpy(), rtol=1e-6, atol=1e-6)


def test_zinb_is_the_mixture() -> None:
    x, mu, theta = _case(1)
    logits = torch.linspace(-3, 3, x.numel(), dtype=torch.float64).reshape(x.shape)
    pi = torch.sigmoid(logits).numpy()
    nb = stats.nbinom.pmf(x.numpy(), n=theta.numpy(), p=(theta / (theta + mu)).numpy())
    ref = np.log(np.where(x.numpy() == 0, pi, 0.0) + (1 - pi) * nb)
    np.testing.assert_allclose(log_zinb(x, mu, theta, logits).numpy(), ref, rtol=1e-6, atol=1e-6)


def test_log_space_reference_equals_textbook_formula() -> None:
    x, mu, theta = _case(2)
    pi = torch.randn(x.shape, dtype=torch.float64)
    lg1 = torch.lgamma(x + 1).sum(1)
    for p in (None, pi):
        got = reconstruction_ll(x, mu.log(), theta, p, lg1)
        want = (log_nb(x, mu, theta) if p is None else log_zinb(x, mu, theta, p)).sum(1)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-7, atol=1e-6)


def test_fast_digamma() -> None:
    y = torch.logspace(-3, 4, 2000, dtype=torch.float64)
    np.testing.assert_allclose(digamma(y).numpy(), torch.digamma(y).numpy(), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("zinb", [True, False])
@pytest.mark.parametrize("per_gene", [True, False])
@pytest.mark.parametrize("sparse", [True, False])
def test_fused_value_and_gradients_match_autograd(zinb: bool, per_gene: bool, sparse: bool) -> None:
    b, g = 5, 8
    x, _, _ = _case(3, b, g)
    flat = x.reshape(-1).nonzero().squeeze(1)
    nz = Nonzeros(flat, flat // g, flat % g, x.reshape(-1)[flat]) if sparse else None
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(b, (2 if zinb else 1) * g, generator=gen, dtype=torch.float64)
    ell = torch.randn(b, 1, generator=gen, dtype=torch.float64) + 3
    log_theta = torch.randn(g if per_gene else (b, g), generator=gen, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (logits, ell, log_theta)]
    lg1 = torch.lgamma(x + 1).sum(1)

    def reference(lo: torch.Tensor, el: torch.Tensor, lt: torch.Tensor) -> torch.Tensor:
        h, pi = (lo[:, :g], lo[:, g:]) if zinb else (lo, None)
        log_mu = torch.log_softmax(h, -1) + el
        return reconstruction_ll(x, log_mu, torch.exp(lt).expand(b, g), pi, lg1).sum()

    fused = nb_loglik(*inputs, x, nz, zinb) - lg1.sum()
    ref = reference(*inputs)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-9)
    for got, want in zip(
        torch.autograd.grad(fused * 0.7, inputs),
        torch.autograd.grad(ref * 0.7, inputs),
        strict=True,
    ):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("likelihood", ["zinb", "nb"])
def test_vae_fused_and_reference_paths_agree(likelihood: str) -> None:
    torch.manual_seed(0)
    shape = VAEShape(n_genes=12, n_batch=3, n_hidden=8, n_latent=3, gene_likelihood=likelihood)
    model = VAE(shape).double().eval()
    x = torch.poisson(torch.rand(7, 12, dtype=torch.float64) * 4)
    x[:, 0] += 1
    batch = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    args = (x, batch, x.sum(1).log(), torch.lgamma(x + 1).sum(1), 0.5)
    outs = []
    for fused in (True, False):
        model.fused = fused
        model.zero_grad()
        out = model(*args, generator=torch.Generator().manual_seed(1))
        out.loss.backward()
        outs.append((out.loss.item(), model.px_r.grad.clone(), model.px_head.weight.grad.clone()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-12)
    for a, b in zip(outs[0][1:], outs[1][1:], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-7, atol=1e-9)


def test_gpu_code_paths_agree_on_cpu() -> None:
    """The CUDA-only branches (dense per-gene sums, torch CSR gather) computed on the CPU."""
    import scipy.sparse as sp

    from methods.scvi.staging import DeviceSource, HostData, row_stats

    x = sp.random(40, 30, density=0.3, format="csr", random_state=0, dtype=np.float32)
    x.data = np.ceil(x.data * 5)
    x.sort_indices()
    log_lib, lg = row_stats(x)
    host = HostData(x, None, np.zeros(40, dtype=np.int64), log_lib, lg, 30)
    src = DeviceSource(host, "csr", torch.device("cpu"), torch.float32)
    idx = torch.tensor([5, 0, 39, 17, 17, 3])
    ref = src.gather(idx)
    src.host_csr = None  # the device (torch) gather used on GPUs
    src.indptr, src.indices = torch.as_tensor(x.indptr).long(), torch.as_tensor(x.indices).long()
    src.data = torch.as_tensor(x.data)
    got = src.gather(idx)
    assert torch.equal(got.x, ref.x) and torch.equal(
        got.x, torch.as_tensor(x[idx.numpy()].toarray())
    )
    for a, b in zip(got.nz, ref.nz, strict=True):
        assert torch.equal(a, b)
    vals = torch.rand(ref.nz.vals.shape, dtype=torch.float64)
    sums = _gene_sum(vals, ref.nz, ref.x.shape), _gene_sum_dense(vals, ref.nz, ref.x.shape)
    np.testing.assert_allclose(sums[0].numpy(), sums[1].numpy(), rtol=1e-12)


@pytest.mark.parametrize("sparse", [True, False])
def test_mixed_precision_logits_are_evaluated_in_float32(sparse: bool) -> None:
    # bf16 logits (a Linear under autocast) beside float32 library and dispersion: the fused
    # backward used to fail ("Index put requires the source and destination dtypes match")
    b, g = 5, 8
    x, _, _ = _case(5, b, g)
    x = x.float()
    flat = x.reshape(-1).nonzero().squeeze(1)
    nz = Nonzeros(flat, flat // g, flat % g, x.reshape(-1)[flat]) if sparse else None
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(b, 2 * g, generator=gen).bfloat16().requires_grad_()
    ell = (torch.randn(b, 1, generator=gen) + 3).requires_grad_()
    log_theta = torch.randn(g, generator=gen).requires_grad_()
    mixed = nb_loglik(logits, ell, log_theta, x, nz, True)
    assert mixed.dtype == torch.float32
    grads = torch.autograd.grad(mixed, (logits, ell, log_theta))
    assert [t.dtype for t in grads] == [torch.bfloat16, torch.float32, torch.float32]
    wide = logits.detach().float().requires_grad_()
    ref = nb_loglik(wide, ell, log_theta, x, nz, True)
    assert mixed.item() == ref.item()
    want = torch.autograd.grad(ref, (wide, ell, log_theta))
    assert torch.equal(grads[0], want[0].bfloat16())
    assert all(torch.equal(a, w) for a, w in zip(grads[1:], want[1:], strict=True))
