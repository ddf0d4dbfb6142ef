"""harness: benchmark and optimize GPU single-cell methods, declaratively."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads (torch's CPU pool, libgomp) spin after each parallel region before they sleep:
# 300,000 turns by default. Beside a busy neighbour a tiny-op trainer then waits on spinning
# threads that have no core; sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs the quiet case
# 2.25x. Measured on the 2-core VM, scVI 60 epochs (elapsed_s, quiet / beside 2 spinning
# processes): spin 300,000 (default) 7.1 / 55.9 s; ACTIVE 8.2-9.4 / 51.7 s; PASSIVE 18.6 /
# 25.6 s; spin 30,000 8.5 / 39.3 s. Kept: 30,000 — the quiet speed, a third less time beside a
# busy job. Set before torch loads libgomp (entry points import this package first); a value
# the user exported wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "30000")
