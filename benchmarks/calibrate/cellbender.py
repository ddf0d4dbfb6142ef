"""CellBender: legitimate variants (another posterior or MAP batch size — the posterior's
draws then come from another random stream —, a reassociated likelihood sum, a 1e-6 perturbed
initialisation, the training's random stream reseeded; another seed as the upper reference)
against planted regressions (one or a quarter of the posterior draws, skipped backward passes,
skipped minibatches, half the epochs). Posterior-only variants replay the reference's training.

    python benchmarks/calibrate_tolerances.py cellbender [--epochs 150]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from calibrate.common import (
    Replay,
    on_model,
    patched,
    perturbed_build,
    reseed,
    set_args,
    skip_backward,
    stacked,
)
from calibrate.table import Variant, add_common, calibrate


def nb_reassociated(fn: Callable) -> Callable:
    """The NB approximation with its terms summed in another order (x·log m first, the
    log1p term before the lgamma ratio)."""
    from methods.cellbender.model import NB_SWITCH, lgamma_ratio

    def nb(x: torch.Tensor, mu: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor) -> Any:
        mean = lam + mu
        use_nb = mu > NB_SWITCH * lam
        mu_safe = torch.where(use_nb, mu, torch.ones_like(mu))
        r = torch.where(use_nb, alpha * (mean / mu_safe).square(), torch.ones_like(mu))
        nb = (x * torch.log(mean) - (r + x) * torch.log1p(mean / r)) + lgamma_ratio(x, r)
        return torch.where(use_nb, nb, x * torch.log(lam) - lam)

    return nb


def skip_third_batches(fn: Callable) -> Callable:
    def epoch(self: Any, e: int, start: int = 0) -> Iterator[np.ndarray]:
        for b, idx in enumerate(fn(self, e, start), start=start):
            if b % 3 != 2:
                yield idx

    return epoch


def diagnostics(got: Any, ref: Any) -> dict[str, float]:
    """Not gating: the total count removed from the cells both call (relative), which the
    posterior's random stream moves as much as fewer draws do."""
    p, p_ref = np.asarray(got["cell_probability"]), np.asarray(ref["cell_probability"])
    if p.shape != p_ref.shape:
        return {}
    both = (p > 0.5) & (p_ref > 0.5)
    d, d_ref = sp.csr_matrix(got["denoised"])[both], sp.csr_matrix(ref["denoised"])[both]
    f_ref = np.asarray(ref["background_fraction"])[both]
    kept = np.asarray(d_ref.sum(axis=1)).ravel()
    removed = np.sum(kept * f_ref / np.maximum(1 - f_ref, 1e-12))
    return {"~removed_total_rel": float(abs((d_ref - d).sum()) / max(removed, 1.0))}


def run(args: argparse.Namespace) -> None:
    import methods.cellbender.method as method_mod
    import methods.cellbender.model as model_mod
    import methods.cellbender.posterior as post_mod
    import methods.cellbender.train as train_mod
    from methods.cellbender import check

    def compare(got: Any, ref: Any, tol: Any) -> tuple[dict[str, float], bool]:
        m, ok = check.compare(got, ref, tol)
        return {**m, **diagnostics(got, ref)}, ok

    post = [method_mod, post_mod]
    trainer = [method_mod, train_mod]

    def draws(f: Callable[[int], int]) -> Callable[[], Any]:
        return lambda: patched(post, "noise_posterior", set_args(n_samples=f))

    def batch(n: int) -> Callable[[], Any]:
        return lambda: patched(post, "noise_posterior", set_args(batch=lambda _: n))

    base = ["method=cellbender", "hardware=cpu", f"method.epochs={args.epochs}"]
    variants = [
        Variant("posterior batch 64", "legit", replay=True, patch=batch(64)),
        Variant("posterior batch 32", "legit", replay=True, patch=batch(32)),
        Variant("posterior batch 256", "legit", replay=True, patch=batch(256)),
        Variant("MAP latents batch 250", "legit", replay=True,
                patch=lambda: patched(post, "map_latents", set_args(batch=lambda _: 250))),
        Variant("NB log-prob terms reassociated", "legit",
                patch=lambda: patched(model_mod, "nb_approx_logprob", nb_reassociated)),
        Variant("init perturbed 1e-6", "legit",
                patch=lambda: perturbed_build(method_mod.CellBender)),
        Variant("training RNG stream reseeded", "legit",
                patch=lambda: patched(trainer, "train", on_model(reseed(args.reseed)))),
        Variant("seed=1", "seed", overrides=["method.seed=1"]),
        Variant("1 posterior draw", "planted", replay=True, patch=draws(lambda n: 1)),
        Variant("a quarter of the posterior draws", "planted", replay=True,
                patch=draws(lambda n: max(1, n // 4))),
        Variant("1 posterior draw at posterior batch 64", "planted", replay=True,
                patch=stacked(draws(lambda n: 1), batch(64))),
        Variant("a quarter of the draws at posterior batch 64", "planted", replay=True,
                patch=stacked(draws(lambda n: max(1, n // 4)), batch(64))),
        Variant("backward skipped every 3rd batch", "planted", patch=lambda: skip_backward(3)),
        Variant("every 3rd minibatch skipped", "planted",
                patch=lambda: patched(train_mod.BatchPlan, "epoch", skip_third_batches)),
        Variant("half the epochs", "planted",
                max_steps=lambda ready: ready.state.plan.batches * args.epochs // 2),
    ]  # fmt: skip
    calibrate(
        f"CellBender, default synthetic droplets, {args.epochs} epochs",
        base, variants, compare, Replay(trainer), args,
    )  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cellbender", help="CellBender remove-background")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--reseed", type=int, default=12345, help="the reseeded training's seed")
    add_common(p)
    p.set_defaults(func=run)
