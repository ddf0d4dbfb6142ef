"""Reporting: tables and plots over results.tsv (loop progress, sweeps)."""
