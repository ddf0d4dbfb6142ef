"""Calibrate the correctness tiers: how far legitimate variants move the outputs (precision,
batch sizes, reassociated sums, perturbed initialisations, seeds) versus planted regressions
(fewer QP sweeps, an earlier stop, a truncated final fit; skipped minibatches or backward
passes, fewer Monte-Carlo draws, frozen parameters, dropout off, the batch covariate ignored,
...). Prints the figures the tolerances in ``methods/*/config.py`` are set from, and each
variant's verdict under the current tolerances. One module per method in
``benchmarks/calibrate/``. The trainers' calibrations (cellbender, scbert, cellwhisperer) also
take ``--only NAME,...`` (a subset of the variants), ``--save DIR`` (every run's outputs and
work counters, one .npz each) and ``--reuse DIR`` (the table again from such a folder, e.g.
after a change of ``check.compare``, without training).

    python benchmarks/calibrate_tolerances.py rctd [--n-pixels 2000] [--modes full,doublet,multi]
    python benchmarks/calibrate_tolerances.py scvi [--epochs 100]
    python benchmarks/calibrate_tolerances.py cellbender [--epochs 150]
    python benchmarks/calibrate_tolerances.py scbert [--epochs-a 6 --epochs-b 4]
    python benchmarks/calibrate_tolerances.py cellwhisperer [--epochs 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the calibrate package
# this checkout's harness and methods, not an installed (editable) copy of another checkout
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from calibrate import cellbender, cellwhisperer, rctd, scbert, scvi  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="method", required=True)
    for module in (rctd, scvi, cellbender, scbert, cellwhisperer):
        module.add_parser(sub)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
