"""The toy method's editable surface: tests commit changes to these values."""

SLEEP_S = 0.05
OFFSET = 0.0
CRASH = False
HANG = False
