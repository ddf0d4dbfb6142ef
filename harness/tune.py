"""``python -m harness.tune``: see :mod:`harness.optimize.tune`."""

import sys

from harness.core.usage import run_command
from harness.optimize import tune as command

USAGE = (
    "usage: python -m harness.tune method=M [overrides...] "
    "[tune.n_trials=N tune.study=NAME tune.storage=URL]"
)

if __name__ == "__main__":
    sys.exit(run_command(command, USAGE))
