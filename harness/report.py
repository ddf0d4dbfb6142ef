"""``python -m harness.report``: see :mod:`harness.reporting.report`."""

import sys

from harness.reporting.report import main

if __name__ == "__main__":
    sys.exit(main())
