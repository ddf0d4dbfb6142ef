"""``python -m harness.loop``: see :mod:`harness.optimize.loop`."""

import sys

from harness.core.usage import run_command
from harness.optimize import loop as command

USAGE = (
    "usage: python -m harness.loop start tag=T [overrides...] | try -d DESCRIPTION "
    "[tag=T] [--neutral] | status [tag=T] [--measure]"
)

if __name__ == "__main__":
    sys.exit(run_command(command, USAGE))
