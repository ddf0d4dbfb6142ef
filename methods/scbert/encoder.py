"""The Performer encoder (editable surface): token + gene embeddings, pre-LayerNorm blocks of
FAVOR+ attention and a GELU feed-forward, a final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from methods.scbert.attention import FastAttention


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, nb_features: int, seed: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FastAttention(dim, heads, dim_head, nb_features, seed)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class Performer(nn.Module):
    """tokens (B, G + 1) → features (B, G + 1, dim)."""

    def __init__(
        self,
        n_tokens: int,
        seq_len: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        nb_features: int,
        gene_embedding: torch.Tensor,
        train_gene_embedding: bool,
        seed: int,
    ) -> None:
        super().__init__()
        self.token_emb = nn.Embedding(n_tokens, dim)
        pos = torch.cat([gene_embedding, torch.zeros(1, dim)])  # the appended token's row: 0
        self.gene_emb = nn.Parameter(pos, requires_grad=train_gene_embedding)
        self.blocks = nn.ModuleList(
            Block(dim, heads, dim_head, nb_features, seed + i) for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        assert pos.shape[0] == seq_len

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_emb(tokens) + self.gene_emb[None]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
