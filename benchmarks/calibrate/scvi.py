"""scVI: a perturbed initialisation, the autograd likelihood, dense staging and another seed
(legitimate) against the batch covariate ignored, dropout off, lr × 2 and half the epochs
(planted).

    python benchmarks/calibrate_tolerances.py scvi [--epochs 100]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch

from calibrate.common import patched, run_variant


def run(args: argparse.Namespace) -> None:
    import methods.scvi.method as method_mod
    import methods.scvi.model as model_mod
    from methods.scvi import check

    base = ["method=scvi", "hardware=cpu", f"method.max_epochs={args.epochs}"]

    def perturb_init() -> Any:
        def wrap(fn: Callable) -> Callable:
            def make(model: Any, *a: Any, **kw: Any) -> Any:
                with torch.no_grad():
                    g = torch.Generator().manual_seed(123)
                    for p in model.parameters():
                        p.add_(1e-6 * torch.randn(p.shape, generator=g, dtype=p.dtype))
                return fn(model, *a, **kw)

            return make

        return patched(method_mod, "make_optimizer", wrap)

    def no_batch() -> Any:
        def wrap(fn: Callable) -> Callable:
            def onehot(self: Any, batch: Any, dtype: Any) -> Any:
                return fn(self, torch.zeros_like(batch), dtype)

            return onehot

        return patched(model_mod.VAE, "onehot", wrap)

    def no_fused() -> Any:
        def wrap(fn: Callable) -> Callable:
            def forward(self: Any, *a: Any, **kw: Any) -> Any:
                self.fused = False
                return fn(self, *a, **kw)

            return forward

        return patched(model_mod.VAE, "forward", wrap)

    def dropout_off() -> Any:
        def wrap(fn: Callable) -> Callable:
            def init(self: Any, *a: Any, **kw: Any) -> Any:
                fn(self, *a, **kw)
                if self.dropout is not None:
                    self.dropout.p = 0.0

            return init

        return patched(model_mod.FCStack, "__init__", wrap)

    ready, ref = run_variant(base)
    tol = ready.method.cfg.tol
    variants: dict[str, tuple[list[str], Any]] = {
        "init perturbed 1e-6 (legit)": ([], perturb_init),
        "autograd likelihood (legit)": ([], no_fused),
        "staging=dense (legit)": (["method.staging=dense"], None),
        "seed=1 (seed-to-seed)": (["method.seed=1"], None),
        "batch covariate ignored (planted)": ([], no_batch),
        "dropout p=0 (planted)": ([], dropout_off),
        "lr x2 (planted)": (["method.lr=2e-3"], None),
        "half the epochs (planted)": ([f"method.max_epochs={args.epochs // 2}"], None),
    }
    print(f"\nscVI default synthetic set, {args.epochs} epochs; tol {tol}")
    print(f"  reference work {ref.work}")
    for name, (extra, patch) in variants.items():
        _, got = run_variant([*base, *extra], patch)
        if got.work != ref.work:
            diff = {
                k: (got.work.get(k), ref.work.get(k))
                for k in ref.work
                if got.work.get(k) != ref.work.get(k)
            }
            print(f"  {name:34} WRONG  work counters differ {diff}")
            continue
        metrics, ok = check.compare(got.outputs, ref.outputs, tol)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"  {name:34} {'close' if ok else 'WRONG':6} {shown}")
        sys.stdout.flush()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("scvi", help="scVI")
    p.add_argument("--epochs", type=int, default=100)
    p.set_defaults(func=run)
