"""The training loop (editable surface): the red-team tests replace it with cheats."""

import time

import torch


def fit(model, opt, state, epochs, batch_size, seed, sleep_s, ctx):
    n = state.x.shape[0]
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100 + epoch))
        for b in range(n // batch_size):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = ((model(state.x[idx]).squeeze(-1) - state.y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(sleep_s)
            step += 1
            if not ctx.steps_left(step):
                return
        ctx.mark(epoch + 1, "fit", loss=loss.item())
