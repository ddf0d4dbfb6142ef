"""Priors from the UMI-rank curve (read-only surface: they define the task's inputs).

From the droplets' total counts (those ≥ ``low_count``): an Otsu threshold on log counts
splits the cell-like from the empty-like droplets; ``cell_counts`` is the median of the top
``expected_cells`` (or of those above the threshold), ``empty_counts`` the median below it.
Droplets below exp(midpoint(log empty_counts, log threshold)) are *surely empty*;
``log_crossover`` = mean(log surely-empty, log cell_counts); ``d_std`` = std(log counts above
the crossover) / 5. The analysed set is the top ``total_included`` droplets; the ambient prior
``chi_ambient`` is the normalised sum over its surely-empty droplets and ``chi_bar`` the average
expression over all of it. Genes without counts in the surely-empty droplets are excluded from
the model and passed through unchanged.
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
    surely_empty: float  # UMI below which a droplet is surely empty
    log_crossover: float
    d_std: float
    expected_cells: int
    total_included: int
    naive_logit: float  # logit of the expected cell fraction among the analysed droplets

    def logit_prior(self, log_counts: np.ndarray) -> np.ndarray:
        """The prior logit of y = 1 per droplet: −100 below the midpoint of log surely-empty
        and log cell_counts, +10 at or above the cell prior, the naive prior between."""
        low = 0.5 * (math.log(self.surely_empty) + math.log(self.cell_counts))
        out = np.full(log_counts.shape, self.naive_logit)
        out[log_counts <= low] = -100.0
        out[log_counts >= math.log(self.cell_counts)] = 10.0
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
) -> Priors:
    """The priors of the module doc from the droplets' total counts ``umi``."""
    valid = np.sort(umi[umi >= low_count])[::-1].astype(np.float64)
    logs = np.log(valid)
    threshold = math.exp(otsu(logs))
    above = valid[valid > threshold]
    n_cells = int(expected_cells) if expected_cells else max(int(above.size), 1)
    cell_counts = float(np.median(valid[:n_cells]))
    below = valid[valid <= threshold]
    empty_counts = float(np.median(below)) if below.size else float(low_count)
    surely_empty = math.exp(0.5 * (math.log(max(empty_counts, 1.0)) + math.log(threshold)))
    log_crossover = 0.5 * (math.log(surely_empty) + math.log(cell_counts))
    over = logs[logs > log_crossover]
    d_std = float(np.std(over) / 5) if over.size > 1 else 0.05
    n_above = int(np.sum(logs > log_crossover))
    total = (
        int(total_included) if total_included else min(valid.size, max(n_above + 1000, 2 * n_above))
    )
    frac = min(max(n_cells / max(total, 1), 1e-3), 1 - 1e-3)
    return Priors(
        cell_counts=cell_counts,
        empty_counts=empty_counts,
        surely_empty=surely_empty,
        log_crossover=log_crossover,
        d_std=max(d_std, 0.01),
        expected_cells=n_cells,
        total_included=total,
        naive_logit=math.log(frac / (1 - frac)),
    )


def ambient_profiles(x: sp.csr_matrix, surely_empty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chi_ambient, chi_bar): normalised sums over the surely-empty droplets and over all."""
    amb = np.asarray(x[surely_empty].sum(axis=0), dtype=np.float64).ravel() + 1e-6
    bar = np.asarray(x.sum(axis=0), dtype=np.float64).ravel() + 1e-6
    return amb / amb.sum(), bar / bar.sum()
