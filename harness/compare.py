"""``python -m harness.compare``: see :mod:`harness.optimize.compare`."""

import sys

from harness.core.usage import run_command
from harness.optimize import compare as command

USAGE = "usage: python -m harness.compare REV_A REV_B [overrides... | tag=T]"

if __name__ == "__main__":
    sys.exit(run_command(command, USAGE))
