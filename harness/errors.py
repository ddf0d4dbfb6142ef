"""User-facing errors: reported as one line, exit code 2, nothing written."""


class UserError(Exception):
    """A mistake in the user's config, input files or hardware choice.

    The message must be one line naming the culprit (key, file, column) and what is wrong.
    """
