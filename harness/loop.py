"""``python -m harness.loop``: see :mod:`harness.optimize.loop`."""

import sys

from harness.optimize.loop import main

if __name__ == "__main__":
    sys.exit(main())
