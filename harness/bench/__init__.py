"""Benchmarking: the method contract, hardware resolution, the run protocols (``repeat`` and
``train``), output hashing (dense and sparse), baselines and verdicts, harness-owned
checkpoints, the environment fingerprint, and the runner that ties them together."""
