"""harness: benchmark and optimize GPU single-cell methods, declaratively."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads (torch's CPU pool, libgomp) spin after every parallel region by default: beside
# a busy neighbour a tiny-op trainer's epochs then wait on spinning threads that have no core.
# Measured on the 2-core VM at load ~7 (other jobs beside), scVI 30 epochs: 113-260 s with the
# default (ACTIVE), 11-17 s with PASSIVE. Set before torch loads libgomp (entry points import
# this package first); a value the user exported wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
