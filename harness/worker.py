"""``python -m harness.worker``: the A/B benchmark worker (JSON lines on stdin/stdout).

This module path and its protocol are stable: ``harness.compare`` starts it inside old
commits. The implementation is :mod:`harness.optimize.serve`.
"""

from harness.optimize.serve import main

if __name__ == "__main__":
    main()
