"""Priors from the UMI-rank curve (read-only surface: they define the task's inputs).

From the droplets' total counts (those ≥ ``low_count``), ranked by decreasing UMI: the number
of cells is ``expected_cells`` (or, without it, the droplets above an Otsu threshold on log
counts); ``cell_counts`` is the geometric mean of the top cells' UMI. The analysed set is the
top ``total_included`` droplets (without it: the cells plus about as many again, at most half
of the droplets below them). ``empty_counts`` is the median UMI of the last 500 analysed
droplets below the cells, ``surely_empty`` the UMI of the first droplet past the analysed set,
``log_crossover`` = mean(log surely-empty, log cell_counts) and ``d_std`` = std(log counts
above the crossover) / 5. The *empty* droplets used in training lie past the analysed set,
above ``low_cutoff`` = max(``low_count``, empty_counts / 2); ``chi_ambient`` is their
normalised sum and ``chi_bar`` the average expression over all droplets. Modelled genes have
counts and a projected ambient count in cells above 0.1 (max(cells, 5000) × their mean count
in droplets between ``low_count`` and ``empty_upper``); the others pass through unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Priors:
    cell_counts: float
    empty_counts: float
    surely_empty: float  # UMI of the first droplet past the analysed set
    log_crossover: float
    d_std: float
    expected_cells: int
    total_included: int
    naive_logit: float  # logit of the expected cell fraction of a training minibatch
    low_cutoff: float  # empties used in training: past the analysed set, UMI above this
    empty_upper: float  # upper UMI of the droplets that project the ambient per gene

    def logit_prior(self, log_counts: np.ndarray) -> np.ndarray:
        """The prior logit of y = 1 per droplet: −100 below the midpoint of log surely-empty
        and log1p(cell_counts), +10 at or above log1p(cell_counts), the naive prior between."""
        log_cell = math.log1p(self.cell_counts)
        low = 0.5 * (math.log(self.surely_empty) + log_cell)
        out = np.full(log_counts.shape, self.naive_logit)
        out[log_counts <= low] = -100.0
        out[log_counts >= log_cell] = 10.0
        return out


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[1:][int(np.argmax(between[:-1]))])


def estimate(
    umi: np.ndarray,
    expected_cells: int | None,
    total_included: int | None,
    low_count: int = 5,
    empty_fraction: float = 0.2,
) -> Priors:
    """The priors of the module doc from the droplets' total counts ``umi``."""
    valid = np.sort(umi[umi >= low_count])[::-1].astype(np.float64)
    valid = np.maximum(valid, 1.0)
    logs = np.log(valid)
    n_cells = int(expected_cells) if expected_cells else int(np.sum(logs > otsu(logs)))
    n_cells = min(max(n_cells, 1), valid.size)
    cell_counts = float(np.exp(np.mean(logs[:n_cells])))
    if total_included:
        total = int(total_included)
    else:
        total = min(max(n_cells + 1000, 2 * n_cells), n_cells + (valid.size - n_cells) // 2)
    total = min(max(total, n_cells + 1), valid.size)
    tail = valid[max(n_cells, total - 500) : total]
    empty_counts = float(np.median(tail)) if tail.size else float(valid[-1])
    surely_empty = float(valid[total]) if total < valid.size else float(valid[-1])
    log_crossover = 0.5 * (math.log(surely_empty) + math.log(cell_counts))
    over = logs[logs > log_crossover]
    d_std = float(np.std(over) / 5) if over.size > 1 else 0.05
    frac = min(max(n_cells / total * (1 - empty_fraction), 1e-3), 1 - 1e-3)
    return Priors(
        cell_counts=cell_counts,
        empty_counts=empty_counts,
        surely_empty=surely_empty,
        log_crossover=log_crossover,
        d_std=max(d_std, 0.01),
        expected_cells=n_cells,
        total_included=total,
        naive_logit=math.log(frac / (1 - frac)),
        low_cutoff=max(float(low_count), float(int(0.5 * empty_counts))),
        empty_upper=min(math.sqrt(cell_counts * empty_counts), 1.5 * empty_counts),
    )


def modelled_genes(
    x: sp.csr_matrix, umi: np.ndarray, p: Priors, low_count: int, floor: float = 0.1
) -> np.ndarray:
    """Genes with counts whose projected ambient count in cells exceeds ``floor``."""
    seen = np.asarray(x.sum(axis=0)).ravel() > 0
    empties = (umi > low_count) & (umi < p.empty_upper)
    mean = np.asarray(x[empties].mean(axis=0)).ravel() if empties.any() else np.zeros(x.shape[1])
    return np.flatnonzero(seen & (max(p.expected_cells, 5000) * mean > floor))


def ambient_profiles(x_empty: sp.csr_matrix, x_all: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(chi_ambient, chi_bar): normalised sums over the empty droplets and over all."""
    amb = np.asarray(x_empty.sum(axis=0), dtype=np.float64).ravel() + 1e-6
    bar = np.asarray(x_all.sum(axis=0), dtype=np.float64).ravel() + 1e-6
    return amb / amb.sum(), bar / bar.sum()
