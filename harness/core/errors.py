"""User-facing errors: reported as one line, exit code 2, nothing written."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in the user's config, input files or hardware choice.

    The message must be one line naming the culprit (key, file, column) and what is wrong.
    """


def print_error(message: object) -> None:
    """``error: <first line of message>`` on stderr (the one error format of every command)."""
    text = " ".join(str(message).split()) or "unknown error"
    print(f"error: {text}", file=sys.stderr, flush=True)


def report_user_errors(run: Callable[[], int | None]) -> int:
    """Run a command's body: a UserError becomes ``error: <line>`` on stderr and exit code 2."""
    try:
        return run() or 0
    except UserError as exc:
        print_error(exc)
        return 2
