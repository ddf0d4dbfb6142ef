"""CellWhisperer: legitimate variants (another embedding batch size, the logit scale applied
after the similarity product, a 1e-6 perturbed initialisation, the training's random stream —
its dropout masks — reseeded; another seed as the upper reference) against planted regressions
(the temperature frozen, skipped backward passes, a frozen projection head, half the epochs).

    python benchmarks/calibrate_tolerances.py cellwhisperer [--epochs 10] [--only NAME,...]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from calibrate.common import (
    Replay,
    freeze,
    on_model,
    patched,
    perturbed_build,
    reseed,
    set_args,
    skip_backward,
)
from calibrate.table import Variant, add_common, calibrate


def loss_reassociated(fn: Callable) -> Callable:
    """The symmetric InfoNCE with the scale applied to the similarities (exp(t)·(E Eᵀ))
    instead of to the cell embeddings ((exp(t)·E) Eᵀ)."""

    def loss(self: Any, cell_features: Any, ids: Any, mask: Any, weights: Any = None) -> Any:
        e_cell = self.cell_head(cell_features)
        e_text = self.text_head(self.text(ids, mask))
        logits = self.log_scale.exp() * (e_cell @ e_text.T)
        target = torch.arange(logits.shape[0], device=logits.device)
        per = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                     + F.cross_entropy(logits.T, target, reduction="none"))  # fmt: skip
        return (per * weights).sum() / weights.sum() if weights is not None else per.mean()

    return loss


def diagnostics(got: Any, ref: Any) -> dict[str, float]:
    """Not gating: the relative L2 distance of the evaluation cells' embeddings."""
    a = np.asarray(got["cell_embeddings"], np.float64)
    b = np.asarray(ref["cell_embeddings"], np.float64)
    return {"~cell_embeddings_l2": float(np.linalg.norm(a - b) / np.linalg.norm(b))}


def run(args: argparse.Namespace) -> None:
    import methods.cellwhisperer.method as method_mod
    import methods.cellwhisperer.model as model_mod
    import methods.cellwhisperer.train as train_mod
    from methods.cellwhisperer import check

    def compare(got: Any, ref: Any, tol: Any) -> tuple[dict[str, float], bool]:
        m, ok = check.compare(got, ref, tol)
        return {**m, **diagnostics(got, ref)}, ok

    trainer = [train_mod, method_mod]

    def half(ready: Any) -> int:
        per_epoch = max(1, ready.state.cell_tokens.shape[0] // ready.method.cfg.batch_size)
        return per_epoch * args.epochs // 2

    base = ["method=cellwhisperer", "hardware=cpu", f"method.epochs={args.epochs}"]
    variants = [
        Variant("embedding batch 64", "legit", replay=True,
                patch=lambda: patched(trainer, "embed", set_args(batch=lambda _: 64))),
        Variant("logit scale applied after the product", "legit",
                patch=lambda: patched(model_mod.Clip, "loss", loss_reassociated)),
        Variant("init perturbed 1e-6", "legit",
                patch=lambda: perturbed_build(method_mod.CellWhisperer)),
        Variant("training RNG stream reseeded", "legit",
                patch=lambda: patched(trainer, "train", on_model(reseed(args.reseed)))),
        Variant("seed=1", "seed", overrides=["method.seed=1"]),
        Variant("temperature (log_scale) frozen", "planted",
                patch=lambda: patched(trainer, "train", on_model(freeze("log_scale")))),
        Variant("backward skipped every 3rd batch", "planted", patch=lambda: skip_backward(3)),
        Variant("cell projection head frozen", "planted",
                patch=lambda: patched(trainer, "train", on_model(freeze("cell_head.")))),
        Variant("half the epochs", "planted", max_steps=half),
    ]  # fmt: skip
    calibrate(
        f"CellWhisperer, default synthetic captioned set, {args.epochs} epochs",
        base, variants, compare, Replay(trainer), args,
    )  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cellwhisperer", help="CellWhisperer (CLIP, transcriptomes and text)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--reseed", type=int, default=12345, help="the reseeded training's seed")
    add_common(p)
    p.set_defaults(func=run)
