"""Core: what every other sub-package may use and that uses nothing of theirs — user errors
and the one-line error printer, atomic file writes and file locks."""
