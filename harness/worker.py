"""``python -m harness.worker``: the A/B benchmark worker (JSON lines on stdin/stdout).

This module path and its protocol are stable: ``harness.compare`` starts it inside old
commits. The implementation is :mod:`harness.optimize.serve`.
"""

import sys

from harness.core.usage import run_command
from harness.optimize import serve as command

USAGE = (
    "usage: python -m harness.worker "
    "[overrides...]   (JSON lines on stdin/stdout; started by the loop and harness.compare)"
)

if __name__ == "__main__":
    sys.exit(run_command(command, USAGE))
