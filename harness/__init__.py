"""harness: benchmark and optimize GPU single-cell methods, declaratively."""

__version__ = "0.1.0"
