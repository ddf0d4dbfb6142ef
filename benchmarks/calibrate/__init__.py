"""Tolerance calibrations, one module per method (``add_parser`` registers its subcommand);
``common`` holds the runner, the monkeypatching helpers and the printed table. Entry point:
``benchmarks/calibrate_tolerances.py``."""
