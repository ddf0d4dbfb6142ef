"""scBERT = Performer encoder + classification head (editable surface)."""

from __future__ import annotations

import torch
from torch import nn

from methods.scbert.encoder import Performer
from methods.scbert.head import Head


class ScBERT(nn.Module):
    def __init__(
        self,
        n_tokens: int,
        seq_len: int,
        n_classes: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        nb_features: int,
        hidden: tuple[int, int],
        gene_embedding: torch.Tensor,
        train_gene_embedding: bool,
        seed: int,
    ) -> None:
        super().__init__()
        self.encoder = Performer(
            n_tokens, seq_len, dim, depth, heads, dim_head, nb_features, gene_embedding,
            train_gene_embedding, seed,
        )  # fmt: skip
        self.head = Head(dim, seq_len, n_classes, hidden)

    def forward(self, tokens: torch.Tensor, sample: bool = False) -> torch.Tensor:
        return self.head(self.encoder(tokens), sample)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The head's deterministic input (per-gene projection of the encoder's features)."""
        return self.head.flat(self.encoder(tokens))
