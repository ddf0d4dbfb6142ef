"""Configuration: the schema of every harness key, composition (Hydra), validation before any
heavy import (types, ranges, method ↔ dataset roles, precision support), the task identity that
keys baselines, and the method's Optuna search space."""
