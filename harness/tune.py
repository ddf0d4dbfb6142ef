"""``python -m harness.tune``: see :mod:`harness.optimize.tune`."""

import sys

from harness.optimize.tune import main

if __name__ == "__main__":
    sys.exit(main())
