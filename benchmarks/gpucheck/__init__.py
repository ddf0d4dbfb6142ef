"""The GPU check pack behind ``benchmarks/gpu_check.py`` (one module per check)."""
