"""The CLIP model (editable surface): two BERT towers, CLIP-Lite projection heads, a learnable
temperature, the symmetric InfoNCE loss.

Towers are ``transformers``' ``BertModel`` (imported here, lazily for the harness): the
transcriptome tower over rank-value gene tokens, mean-pooled over non-pad tokens of hidden
layer ``emb_layer`` (−1: the second-to-last, Geneformer's convention); the text tower over
caption tokens, its [CLS] pooler output. Either can be a user's pretrained checkpoint
(``from_pretrained(path, local_files_only=True)``, never a download).

Heads (per modality): Linear(d → P, no bias) → BatchNorm → ReLU → Linear(P → P), plus a
shortcut Linear(d → P) initialised near identity, then LayerNorm; L2-normalised.
logits = exp(t) · E_cell · E_textᵀ, t learnable from log(1/0.07). Loss: ½[CE(logits, i) +
CE(logitsᵀ, i)] with optional per-sample weights; a NaN loss stops training (an error, never
silently zeroed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bert(vocab: int, hidden: int, layers: int, heads: int, max_len: int, act: str,
         dropout: float, path: str | None):  # fmt: skip
    from transformers import BertConfig, BertModel

    if path:
        return BertModel.from_pretrained(path, local_files_only=True)
    cfg = BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=max_len, hidden_act=act,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=0,
    )  # fmt: skip
    return BertModel(cfg, add_pooling_layer=True)


class CellTower(nn.Module):
    def __init__(self, bert_model: nn.Module, emb_layer: int) -> None:
        super().__init__()
        self.bert = bert_model
        self.emb_layer = emb_layer

    @property
    def width(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).long()
        out = self.bert(input_ids=tokens, attention_mask=mask, output_hidden_states=True)
        h = out.hidden_states[self.emb_layer - 1 if self.emb_layer < 0 else self.emb_layer]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class TextTower(nn.Module):
    def __init__(self, bert_model: nn.Module) -> None:
        super().__init__()
        self.bert = bert_model

    @property
    def width(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=ids, attention_mask=mask)
        if out.pooler_output is not None:
            return out.pooler_output
        m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        return (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)


class MILinearBlock(nn.Module):
    """CLIP-Lite's projection: an MLP branch plus a near-identity shortcut, then LayerNorm."""

    def __init__(self, d: int, p: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d, p, bias=False), nn.BatchNorm1d(p), nn.ReLU(), nn.Linear(p, p)
        )
        self.shortcut = nn.Linear(d, p)
        with torch.no_grad():
            eye = torch.zeros(p, d)
            eye[: min(p, d), : min(p, d)] = torch.eye(min(p, d))
            self.shortcut.weight.copy_(eye + 1e-3 * torch.randn(p, d))
            self.shortcut.bias.zero_()
        self.norm = nn.LayerNorm(p)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.mlp(h) + self.shortcut(h)), dim=-1)


class Clip(nn.Module):
    def __init__(self, cell: CellTower, text: TextTower, projection: int) -> None:
        super().__init__()
        self.cell, self.text = cell, text
        self.cell_head = MILinearBlock(cell.width, projection)
        self.text_head = MILinearBlock(text.width, projection)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(
        self,
        cell_features: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        e_cell = self.cell_head(cell_features)
        e_text = self.text_head(self.text(ids, mask))
        logits = self.log_scale.exp() * e_cell @ e_text.T
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (
            F.cross_entropy(logits, target, reduction="none")
            + F.cross_entropy(logits.T, target, reduction="none")
        )
        loss = (loss * weights).sum() / weights.sum() if weights is not None else loss.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError("the contrastive loss is NaN/inf; training stopped")
        return loss
