"""User-facing errors: reported as one line, exit code 2, nothing written."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in the user's config, input files or hardware choice.

    The message must be one line naming the culprit (key, file, column) and what is wrong.
    """


def report_user_errors(run: Callable[[], int | None]) -> int:
    """Run a command's body: a UserError becomes ``error: <line>`` on stderr and exit code 2."""
    try:
        return run() or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
