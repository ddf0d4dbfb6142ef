"""Sinks: where a finished benchmark goes — the results.tsv row (appended atomically), the
MLflow run, and the console (progress while running, the summary at the end)."""
