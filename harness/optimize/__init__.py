"""Optimization: the git keep/discard loop (frozen rules, surface and import checks, A/B
workers, the decision rule), ad-hoc A/B comparison of two commits, and Optuna tuning."""
