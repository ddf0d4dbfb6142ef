"""RCTD preprocessing as upstream's ``create.RCTD`` (timed; editable surface).

1. ``nUMI`` = row sums over **all** spatial genes (never recomputed); pixels with
   ``umi_min <= nUMI <= umi_max`` stay.
2. DE gene lists over the genes shared with the reference, minus genes whose name contains
   ``mt-`` (R's case-sensitive ``grep``) and genes with fewer than ``min_obs`` counts in the
   spatial bulk of the kept pixels: gene g is kept if, for some type k,
   ``log(P_gk + 1e-9) - log(mean_{k' != k} P_gk' + 1e-9) > fc`` and ``P_gk > expr``.
   Bulk list (``fc_cutoff``, ``gene_cutoff``) and regression list (``fc_cutoff_reg``,
   ``gene_cutoff_reg``); each needs >= 10 genes.
3. Pixels with fewer than ``counts_min`` counts over the bulk list are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from harness.api import UserError

MIN_GENES = 10
_EPS = 1e-9


@dataclass
class Selection:
    """Pixels and genes the fits use (indices into the spatial columns / shared genes)."""

    pixel_mask: torch.Tensor  # (N_all,) bool: pixels kept
    numi: torch.Tensor  # (N_kept,) nUMI over all genes
    bulk_genes: torch.Tensor  # (G_bulk,) long, positions in the shared-gene list
    reg_genes: torch.Tensor  # (G_reg,) long, positions in the shared-gene list


def de_genes(
    profiles: torch.Tensor, bulk: torch.Tensor, allowed: torch.Tensor, fc: float, expr: float
) -> torch.Tensor:
    """Positions of the DE genes: ``profiles`` (G, K) on the shared genes, ``bulk`` (G,) spatial
    bulk counts, ``allowed`` (G,) bool (not ``mt-`` and bulk >= min_obs)."""
    k = profiles.shape[1]
    if k < 2:
        return torch.zeros(0, dtype=torch.long, device=profiles.device)
    other = (profiles.sum(dim=1, keepdim=True) - profiles) / (k - 1)
    log_fc = torch.log(profiles + _EPS) - torch.log(other + _EPS)
    hit = ((log_fc > fc) & (profiles > expr)).any(dim=1) & allowed
    return hit.nonzero().squeeze(1)


def select(
    spatial: torch.Tensor,
    shared_cols: torch.Tensor,
    profiles: torch.Tensor,
    not_mito: torch.Tensor,
    cfg: Any,  # the method's RCTDConfig (read-only: not imported by editable code)
) -> Selection:
    """Pixel filters and gene lists (module doc).

    Args:
        spatial: (N_all, G_sp) counts in the compute dtype.
        shared_cols: (G,) spatial columns of the genes shared with the reference.
        profiles: (G, K) reference profiles on the shared genes.
        not_mito: (G,) bool, False for shared genes whose name contains ``mt-``.
    """
    numi_all = spatial.sum(dim=1)
    umi_ok = (numi_all >= cfg.umi_min) & (numi_all <= cfg.umi_max)
    counts = spatial[umi_ok][:, shared_cols]
    bulk = counts.sum(dim=0)
    allowed = not_mito & (bulk >= cfg.min_obs)
    bulk_genes = de_genes(profiles, bulk, allowed, cfg.fc_cutoff, cfg.gene_cutoff)
    reg_genes = de_genes(profiles, bulk, allowed, cfg.fc_cutoff_reg, cfg.gene_cutoff_reg)
    for name, genes, fc, expr in (
        ("bulk", bulk_genes, "fc_cutoff", "gene_cutoff"),
        ("regression", reg_genes, "fc_cutoff_reg", "gene_cutoff_reg"),
    ):
        if genes.numel() < MIN_GENES:
            raise UserError(
                f"method.{fc}/method.{expr}: only {genes.numel()} genes pass the {name} DE "
                f"gene filter (need >= {MIN_GENES}); lower the cut-offs or check the data"
            )
    enough = counts[:, bulk_genes].sum(dim=1) >= cfg.counts_min
    pixel_mask = umi_ok.clone()
    pixel_mask[umi_ok] = enough
    if not bool(pixel_mask.any()):
        raise UserError(
            f"dataset.spatial: no pixel passes method.umi_min={cfg.umi_min}, "
            f"method.umi_max={cfg.umi_max:g} and method.counts_min={cfg.counts_min}"
        )
    return Selection(
        pixel_mask=pixel_mask,
        numi=numi_all[pixel_mask],
        bulk_genes=bulk_genes,
        reg_genes=reg_genes,
    )


def select_sparse(
    spatial: sp.csr_matrix,
    shared_cols: np.ndarray,
    profiles: torch.Tensor,
    not_mito: torch.Tensor,
    cfg: Any,  # the method's RCTDConfig (read-only: not imported by editable code)
) -> Selection:
    """:func:`select` on a sparse (pixels, genes) CSR matrix: nUMI, the bulk and the
    ``counts_min`` sums come from the nonzeros (integer sums in float64: exact, so the same
    selection as the dense path), nothing is densified."""
    dev = profiles.device
    numi_all = np.asarray(spatial.sum(axis=1), dtype=np.float64).ravel()
    umi_ok = (numi_all >= cfg.umi_min) & (numi_all <= cfg.umi_max)
    counts = spatial[np.flatnonzero(umi_ok)][:, shared_cols]
    bulk = torch.as_tensor(np.asarray(counts.sum(axis=0), dtype=np.float64).ravel(), device=dev)
    allowed = not_mito & (bulk >= cfg.min_obs)
    bulk_genes = de_genes(
        profiles, bulk.to(profiles.dtype), allowed, cfg.fc_cutoff, cfg.gene_cutoff
    )
    reg_genes = de_genes(
        profiles, bulk.to(profiles.dtype), allowed, cfg.fc_cutoff_reg, cfg.gene_cutoff_reg
    )
    for name, genes, fc, expr in (
        ("bulk", bulk_genes, "fc_cutoff", "gene_cutoff"),
        ("regression", reg_genes, "fc_cutoff_reg", "gene_cutoff_reg"),
    ):
        if genes.numel() < MIN_GENES:
            raise UserError(
                f"method.{fc}/method.{expr}: only {genes.numel()} genes pass the {name} DE "
                f"gene filter (need >= {MIN_GENES}); lower the cut-offs or check the data"
            )
    on_bulk = np.asarray(counts[:, bulk_genes.cpu().numpy()].sum(axis=1), dtype=np.float64).ravel()
    pixel_mask = umi_ok.copy()
    pixel_mask[umi_ok] = on_bulk >= cfg.counts_min
    if not pixel_mask.any():
        raise UserError(
            f"dataset.spatial: no pixel passes method.umi_min={cfg.umi_min}, "
            f"method.umi_max={cfg.umi_max:g} and method.counts_min={cfg.counts_min}"
        )
    return Selection(
        pixel_mask=torch.as_tensor(pixel_mask, device=dev),
        numi=torch.as_tensor(numi_all[pixel_mask], device=dev).to(profiles.dtype),
        bulk_genes=bulk_genes,
        reg_genes=reg_genes,
    )
