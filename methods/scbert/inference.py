"""Monte-Carlo inference (editable surface): the backbone once, the Bayesian head T times.

Only fc1/fc2 are stochastic, so the encoder's features (and the head's deterministic
per-gene projection) are computed once per cell and the head alone is sampled ``T`` times
from a seeded generator; the naive path (T full passes, as upstream) exists for comparison and
gives identical predictions for the same seeds. Returns the mean logits, the mean predictive
probabilities, the predictive entropy and the mutual information (BALD) per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Predictive:
    logits: torch.Tensor  # (N, C) mean of the sampled logits
    probs: torch.Tensor  # (N, C) mean of the sampled softmax probabilities
    entropy: torch.Tensor  # (N,) entropy of the mean probabilities
    mutual_info: torch.Tensor  # (N,) entropy − mean per-sample entropy


def _summarise(samples: list[torch.Tensor]) -> Predictive:
    logits = torch.stack(samples)  # (T, N, C)
    probs = torch.softmax(logits, dim=-1)
    mean = probs.mean(0)
    entropy = -(mean * torch.log(mean.clamp(min=1e-12))).sum(-1)
    per = -(probs * torch.log(probs.clamp(min=1e-12))).sum(-1).mean(0)
    return Predictive(logits.mean(0), mean, entropy, entropy - per)


@torch.no_grad()
def mc_predict(
    model, tokens: torch.Tensor, samples: int, seed: int, batch: int = 64, naive: bool = False
) -> Predictive:
    model.eval()
    out: list[Predictive] = []
    for lo in range(0, tokens.shape[0], batch):
        tok = tokens[lo : lo + batch]
        gen = torch.Generator(device=tok.device).manual_seed(seed + lo)
        if naive:
            draws = [
                model.head.from_flat(model.features(tok), sample=True, generator=gen)
                for _ in range(samples)
            ]
        else:
            flat = model.features(tok)
            draws = [model.head.from_flat(flat, sample=True, generator=gen) for _ in range(samples)]
        out.append(_summarise(draws))
    return Predictive(
        *(torch.cat([getattr(p, f) for p in out]) for f in Predictive.__dataclass_fields__)
    )
