"""Inputs of the two towers (read-only surface: the tokenizers define the task).

Transcriptomes — Geneformer's rank-value encoding: counts normalised to 1e4 per cell, divided
by each gene's median over the training cells' nonzero values, genes ranked by the result
(descending, zeros dropped), truncated to ``max_tokens``; token = gene index + 2 (0: [PAD],
1: [CLS]), a leading [CLS].

Text — a word-level tokenizer trained with ``tokenizers`` on the training captions only
(lower-cased, split on whitespace and punctuation; [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3), or a
user's pretrained tokenizer loaded from a local path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def gene_medians(x: sp.csr_matrix) -> np.ndarray:
    """Per gene: the median of its nonzero normalised values (1 where a gene is never seen)."""
    norm = normalise(x).tocsc()
    med = np.ones(x.shape[1])
    for g in range(x.shape[1]):
        vals = norm.data[norm.indptr[g] : norm.indptr[g + 1]]
        if vals.size:
            med[g] = float(np.median(vals))
    return med


def normalise(x: sp.csr_matrix) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float64)
    total = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(1e4, total, out=np.zeros_like(total), where=total > 0)
    return sp.csr_matrix(sp.diags(scale) @ x)


def rank_tokens(x: sp.csr_matrix, medians: np.ndarray, max_tokens: int) -> torch.Tensor:
    """(cells, max_tokens + 1) long: [CLS] then genes by descending normalised value."""
    norm = normalise(x)
    out = np.zeros((x.shape[0], max_tokens + 1), dtype=np.int64)
    out[:, 0] = 1
    for i in range(x.shape[0]):
        lo, hi = norm.indptr[i], norm.indptr[i + 1]
        genes, vals = norm.indices[lo:hi], norm.data[lo:hi] / medians[norm.indices[lo:hi]]
        order = np.lexsort((genes, -vals))[:max_tokens]  # ties: lower gene index first
        out[i, 1 : 1 + order.size] = genes[order] + 2
    return torch.from_numpy(out)


class TextTokens:
    """Captions → (ids, attention mask) with a word-level vocabulary or a local tokenizer."""

    def __init__(self, captions: list[str] | None = None, path: str | None = None,
                 max_len: int = 32) -> None:  # fmt: skip
        self.max_len = max_len
        self.hf: Any = None
        if path:
            from transformers import AutoTokenizer

            self.hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.vocab_size = int(self.hf.vocab_size)
            return
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
        )
        tok.train_from_iterator(captions or [], trainers.WordLevelTrainer(special_tokens=SPECIAL))
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hf is not None:
            enc = self.hf(texts, padding="max_length", truncation=True, max_length=self.max_len,
                          return_tensors="pt")  # fmt: skip
            return enc["input_ids"], enc["attention_mask"]
        ids = np.zeros((len(texts), self.max_len), dtype=np.int64)
        for i, enc in enumerate(self.tok.encode_batch(texts)):
            seq = [2, *enc.ids[: self.max_len - 2], 3]
            ids[i, : len(seq)] = seq
        t = torch.from_numpy(ids)
        return t, (t != 0).long()
