"""The template method (README "Adding a method"): a linear autoencoder on log-normalised
counts, trained by minibatch Adam — the smallest real trainer that follows the contract.

Read-only surface (defines the task; the optimization loop may not change it): ``config.py``
(schema, tolerances), ``data.py`` (the dataset), ``method.py`` (the glue: work counters,
evaluation). Editable surface: ``train.py`` (the model and its training loop).
"""
