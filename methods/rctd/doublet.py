"""Doublet mode (upstream ``process_bead_doublet``; timed, editable surface), batched.

Per pixel, from its full-mode weights:

1. candidates: types with weight > 0.01 (none: the first three types; one: add type 0, or
   type 1 when the one is type 0);
2. singlet score of every candidate: NLL of a 1-type fit (``score_iter`` iterations);
3. pair score of every candidate pair: NLL of a 2-type fit; the best pair (t1, t2) scores
   ``min_score``;
4. a type is "in all pairs" when every pair scoring below ``min_score + CONFIDENCE`` contains
   it. Neither t1 nor t2: ``reject``; one of them: ``doublet_uncertain`` with that one first;
   both: ``doublet_certain`` with the type of the lower singlet score first;
5. ``singlet`` when (singlet score of the first type) - min_score < DOUBLET_THRESHOLD (a reject
   keeps its class: its singlet score counts as min_score + 2 DOUBLET_THRESHOLD);
6. final 2-type fit of (first, second) (``max_iter`` iterations), normalised to sum 1.

Spot classes are coded 0 reject, 1 singlet, 2 doublet_certain, 3 doublet_uncertain.
``first_class`` / ``second_class`` flag a type known only at the level of its class; with no
class grouping (``class_df``, not supported here) they are always False, as in rctd-py.
"""

from __future__ import annotations

import torch

from methods.rctd.likelihood import LikelihoodTables
from methods.rctd.solver import solve_subsets

SPOT_CLASSES = ("reject", "singlet", "doublet_certain", "doublet_uncertain")
REJECT, SINGLET, CERTAIN, UNCERTAIN = range(4)
WEIGHT_THRESHOLD = 0.01


def candidates(weights: torch.Tensor) -> torch.Tensor:
    """(N, C) candidate type indices per pixel in increasing order, padded with -1."""
    n, k = weights.shape
    cand = weights > WEIGHT_THRESHOLD
    count = cand.sum(dim=1)
    none = count == 0
    cand[none, : min(3, k)] = True
    one = (count == 1) & (k > 1)
    extra = torch.where(cand[:, 0], 1, 0)
    cand[one.nonzero().squeeze(1), extra[one]] = True
    c_max = max(1, int(cand.sum(dim=1).max())) if n else 1
    ar = torch.arange(k, device=weights.device).expand(n, k)
    key = torch.where(cand, ar, k)
    order = torch.sort(key, dim=1).values[:, :c_max]
    return torch.where(order < k, order, -1)


def classify(
    pair: torch.Tensor,
    singlet: torch.Tensor,
    iu: torch.Tensor,
    confidence_threshold: float,
    doublet_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spot classes from scores (steps 3-5 of the module doc).

    Args:
        pair: (N, P) pair scores (inf where a pair does not exist), pair j over the candidate
            slots ``(iu[0, j], iu[1, j])`` in R's loop order (i < j, i outer).
        singlet: (N, C) singlet scores per candidate slot.

    Returns:
        spot class (N,) long, first and second candidate slot (N,), min_score, singlet_score.
    """
    min_score, best = pair.min(dim=1)  # first minimum in (i, j) order, like the R loop
    s1, s2 = iu[0, best], iu[1, best]  # candidate slots of t1, t2
    near = pair < (min_score + confidence_threshold)[:, None]

    def in_all_pairs(slot: torch.Tensor) -> torch.Tensor:
        has = (iu[0][None, :] == slot[:, None]) | (iu[1][None, :] == slot[:, None])
        return ~(near & ~has).any(dim=1)

    all1, all2 = in_all_pairs(s1), in_all_pairs(s2)
    rows = torch.arange(pair.shape[0], device=pair.device)
    single1, single2 = singlet[rows, s1], singlet[rows, s2]
    swap = (~all1 & all2) | (all1 & all2 & (single2 < single1))
    first_slot = torch.where(swap, s2, s1)
    second_slot = torch.where(swap, s1, s2)
    spot = torch.full_like(s1, CERTAIN)
    spot[all1 ^ all2] = UNCERTAIN
    reject = ~all1 & ~all2
    spot[reject] = REJECT
    singlet_score = torch.where(
        reject, min_score + 2.0 * doublet_threshold, singlet[rows, first_slot]
    )
    spot[~reject & (singlet_score - min_score < doublet_threshold)] = SINGLET
    return spot, first_slot, second_slot, min_score, singlet_score


def run_doublet(
    row_off: torch.Tensor,
    numi: torch.Tensor,
    profiles: torch.Tensor,
    tables: LikelihoodTables,
    weights: torch.Tensor,
    *,
    confidence_threshold: float,
    doublet_threshold: float,
    max_iter: int,
    score_iter: int,
    solver_kw: dict,
) -> dict[str, torch.Tensor]:
    """Doublet-mode outputs from the full-mode ``weights`` (module doc)."""
    device, dtype = profiles.device, profiles.dtype
    n = weights.shape[0]
    cand = candidates(weights)
    c = cand.shape[1]
    valid = cand >= 0

    def scores(pix: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return solve_subsets(
            row_off, numi, profiles, pix, types, tables, max_iter=score_iter, score=True,
            **solver_kw,
        )[2]  # fmt: skip

    # singlet scores (N, C)
    sp, sc = valid.nonzero(as_tuple=True)
    singlet = torch.full((n, c), float("inf"), dtype=dtype, device=device)
    singlet[sp, sc] = scores(sp, cand[sp, sc].unsqueeze(1))
    # pair scores (N, C, C), upper triangle
    iu = torch.triu_indices(c, c, offset=1, device=device)
    pair_ok = valid[:, iu[0]] & valid[:, iu[1]]
    pp, pq = pair_ok.nonzero(as_tuple=True)
    pair = torch.full((n, iu.shape[1]), float("inf"), dtype=dtype, device=device)
    types = torch.stack([cand[pp, iu[0, pq]], cand[pp, iu[1, pq]]], dim=1)
    pair[pp, pq] = scores(pp, types)

    spot, first_slot, second_slot, min_score, singlet_score = classify(
        pair, singlet, iu, confidence_threshold, doublet_threshold
    )
    rows = torch.arange(n, device=device)
    first_type, second_type = cand[rows, first_slot], cand[rows, second_slot]

    w2, _, _ = solve_subsets(
        row_off, numi, profiles, rows, torch.stack([first_type, second_type], dim=1), tables,
        max_iter=max_iter, **solver_kw,
    )  # fmt: skip
    w2 = w2 / w2.sum(dim=1, keepdim=True)
    return {
        "weights_doublet": w2,
        "spot_class": spot,
        "first_type": first_type,
        "second_type": second_type,
        "first_class": torch.zeros(n, dtype=torch.bool, device=device),
        "second_class": torch.zeros(n, dtype=torch.bool, device=device),
        "min_score": min_score,
        "singlet_score": singlet_score,
    }
