"""RCTD (Robust Cell Type Decomposition), reimplemented from the method's equations."""
