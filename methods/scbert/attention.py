"""FAVOR+ attention (Choromanski et al. 2021), our own implementation (editable surface).

Softmax attention softmax(QKᵀ/√d)V is approximated with positive random features:
φ(x) = m^{-1/2} · exp(Wx' − |x'|²/2 − c) + ε, x' = x·d^{-1/4}, with the rows of W (m × d)
orthogonal Gaussian directions (blocks of Q factors of Gaussian matrices, each row rescaled
to the norm of a Gaussian vector). Then Attn ≈ D⁻¹ φ(Q)(φ(K)ᵀV), D = φ(Q)(φ(K)ᵀ1): linear in
the sequence length. The stabiliser c is a per-row maximum for queries and a per-head maximum
for keys (both cancel in D⁻¹ up to the ε term), as in the reference implementation; the
projection is drawn once from a seeded generator and then fixed (no redraw), so runs are
reproducible.
"""

from __future__ import annotations

import math

import torch
from torch import nn

KERNEL_EPS = 1e-4


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """(m, d): stacked orthogonal d×d blocks (QR of Gaussian matrices), rows scaled to the
    norms of independent d-dimensional Gaussian vectors."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        g = torch.randn(d, d, generator=generator)
        q, _ = torch.linalg.qr(g)
        blocks.append(q.T)
    rows = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator).norm(dim=1)
    return norms[:, None] * rows


def feature_map(x: torch.Tensor, proj: torch.Tensor, is_query: bool) -> torch.Tensor:
    """φ(x) for x (..., n, d) and proj (m, d): positive softmax-kernel features (..., n, m)."""
    d = x.shape[-1]
    scale = d**-0.25
    xs = x * scale
    wx = xs @ proj.to(x.dtype).T
    half_norm = 0.5 * xs.square().sum(-1, keepdim=True)
    if is_query:
        stab = wx.amax(dim=-1, keepdim=True).detach()
    else:
        stab = wx.amax(dim=(-1, -2), keepdim=True).detach()
    return proj.shape[0] ** -0.5 * (torch.exp(wx - half_norm - stab) + KERNEL_EPS)


def linear_attention(qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """D⁻¹ φ(Q)(φ(K)ᵀV) for features (..., n, m) and values (..., n, e)."""
    kv = kf.transpose(-1, -2) @ v  # (..., m, e)
    norm = qf @ kf.sum(dim=-2).unsqueeze(-1)  # (..., n, 1)
    return (qf @ kv) / norm


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d)V (the reference FAVOR+ approximates)."""
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


class FastAttention(nn.Module):
    """Multi-head FAVOR+ self-attention: qkv without bias, fixed projections, output Linear."""

    def __init__(self, dim: int, heads: int, dim_head: int, nb_features: int, seed: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_gaussian(nb_features, dim_head, gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = linear_attention(
            feature_map(q, self.projection, True), feature_map(k, self.projection, False), v
        )
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))
