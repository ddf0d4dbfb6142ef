"""Multi mode (upstream ``process_bead_multi``; timed, editable surface), batched.

Per pixel, from the full-mode candidates (as in doublet mode):

1. greedy forward selection: at step m, fit every (chosen types + one more candidate) with
   m types (``score_iter`` iterations) and take the lowest NLL; the first type is always
   taken, later ones only if they improve the score by more than DOUBLET_THRESHOLD; at most
   ``max_types`` types;
2. confidence: a chosen type is unconfident when replacing it by any other candidate scores
   below ``min_score + CONFIDENCE_THRESHOLD``;
3. final fit of the chosen types (``max_iter`` iterations), normalised to sum 1.

All fits with the same number of types run as one batch on the device.
"""

from __future__ import annotations

import torch

from methods.rctd.doublet import candidates
from methods.rctd.likelihood import LikelihoodTables
from methods.rctd.solver import solve_subsets


def run_multi(
    row_off: torch.Tensor,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    tables: LikelihoodTables,
    weights: torch.Tensor,
    *,
    max_types: int,
    confidence_threshold: float,
    doublet_threshold: float,
    max_iter: int,
    score_iter: int,
    solver_kw: dict,
) -> dict[str, torch.Tensor]:
    """Multi-mode outputs from the full-mode ``weights`` (module doc)."""
    device, dtype = profiles.device, profiles.dtype
    cand = candidates(weights)
    n, c = cand.shape
    m_max = max_types
    valid = cand >= 0

    def fit(pix: torch.Tensor, types: torch.Tensor, score: bool):
        w, _, nll = solve_subsets(
            row_off, numi, profiles, pix, types, tables,
            max_iter=score_iter if score else max_iter, score=score, **solver_kw,
        )  # fmt: skip
        return nll if score else w

    chosen = torch.full((n, m_max), -1, dtype=torch.long, device=device)
    used = torch.zeros((n, c), dtype=torch.bool, device=device)
    n_types = torch.zeros(n, dtype=torch.long, device=device)
    min_score = torch.full((n,), float("inf"), dtype=dtype, device=device)
    growing = torch.ones(n, dtype=torch.bool, device=device)
    for step in range(m_max):
        avail = valid & ~used & growing[:, None]
        tp, ts = avail.nonzero(as_tuple=True)
        if tp.numel() == 0:
            break
        types = torch.cat([chosen[tp, :step], cand[tp, ts].unsqueeze(1)], dim=1)
        score = torch.full((n, c), float("inf"), dtype=dtype, device=device)
        score[tp, ts] = fit(tp, types, True)
        best, slot = score.min(dim=1)
        accept = avail.any(dim=1)
        if step > 0:
            accept &= best < min_score - doublet_threshold
        acc = accept.nonzero().squeeze(1)
        chosen[acc, step] = cand[acc, slot[acc]]
        used[acc, slot[acc]] = True
        n_types[acc] += 1
        min_score[acc] = best[acc]
        growing = accept

    # confidence: swap each chosen type for each unused candidate
    conf = torch.zeros((n, m_max), dtype=torch.bool, device=device)
    sub_weights = torch.zeros((n, m_max), dtype=dtype, device=device)
    pos = torch.arange(m_max, device=device)
    for m in range(1, m_max + 1):
        at_m = n_types == m
        if not bool(at_m.any()):
            continue
        conf[at_m, :m] = True
        mask = at_m[:, None, None] & (pos < m)[None, :, None] & (valid & ~used)[:, None, :]
        tp, tj, tc = mask.nonzero(as_tuple=True)
        if tp.numel():
            keep_pos = pos[:m].expand(tp.numel(), m)
            keep_pos = keep_pos[keep_pos != tj[:, None]].view(tp.numel(), m - 1)
            types = torch.cat([chosen[tp.unsqueeze(1), keep_pos], cand[tp, tc].unsqueeze(1)], dim=1)
            swap_score = fit(tp, types, True)
            close = swap_score < min_score[tp] + confidence_threshold
            unconf = torch.zeros((n, m_max), dtype=torch.bool, device=device)
            unconf[tp[close], tj[close]] = True
            conf &= ~unconf
        px = at_m.nonzero().squeeze(1)
        w = fit(px, chosen[px, :m], False)
        sub_weights[px, :m] = w / w.sum(dim=1, keepdim=True)
    return {
        "sub_weights": sub_weights,
        "cell_type_indices": chosen,
        "n_types": n_types,
        "conf_list": conf,
        "min_score": min_score,
    }
