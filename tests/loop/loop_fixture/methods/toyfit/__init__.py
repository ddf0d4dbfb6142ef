"""A test-only trainer for the loop's red team: read-only glue that counts the work by hooks,
an editable training loop (``fit.py``) and an editable staging step called in ``prepare``."""
