"""The model and its training loop (editable surface: what the optimization loop may change).

Editable code imports only the standard library, declared packages, its method's other
editable modules and ``harness.api`` — never the read-only glue, data or evaluation.
"""

from __future__ import annotations

from typing import Any

import torch


class LinearAE(torch.nn.Module):
    """x → encoder → k components → decoder → x̂ (a linear autoencoder: PCA's subspace)."""

    def __init__(self, n_genes: int, n_components: int) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(n_genes, n_components)
        self.decoder = torch.nn.Linear(n_components, n_genes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def fit(
    model: LinearAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    epochs: int,
    batch_size: int,
    seed: int,
    ctx: Any,
) -> None:
    """Minibatch training (the last partial batch dropped). ``ctx`` is the run context's view:
    ``ctx.steps_left(step)`` ends the warm-up after its step budget, ``ctx.mark`` closes an
    epoch (its time is a sample of the benchmark; ``loss`` becomes the series ``fit/loss``)."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n - batch_size + 1, batch_size):
            batch = x[order[start : start + batch_size]]
            loss = ((model(batch) - batch) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if not ctx.steps_left(step):
                return
        ctx.mark(epoch + 1, "fit", loss=float(loss.detach()))
