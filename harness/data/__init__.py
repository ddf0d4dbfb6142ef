"""Data helpers for methods' dataset loaders: reading user h5ad files, checking count
matrices, resolving user paths, and the real PBMC cells shipped inside scanpy."""
