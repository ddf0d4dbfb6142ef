"""``python -m harness.compare``: see :mod:`harness.optimize.compare`."""

import sys

from harness.optimize.compare import main

if __name__ == "__main__":
    sys.exit(main())
