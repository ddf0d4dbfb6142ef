"""Calibrate the correctness tiers: how far legitimate variants move the outputs (precision,
batch sizes, perturbed initialisations, seeds) versus planted regressions (fewer QP sweeps, an
earlier stop, a truncated final fit; skipped minibatches, dropout off, the batch covariate
ignored, ...). Prints the figures the tolerances in ``methods/*/config.py`` are set from, and
each variant's verdict under the current tolerances.

    python benchmarks/calibrate_tolerances.py rctd [--n-pixels 2000] [--modes full,doublet,multi]
    python benchmarks/calibrate_tolerances.py scvi [--epochs 100]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

from harness.bench.contract import RunContext, RunResult
from harness.bench.protocol import timed_call


def run_variant(
    overrides: list[str], patch: Callable[[], Any] | None = None
) -> tuple[Any, RunResult]:
    from harness.api import prepared

    ready = prepared(overrides)
    cm = patch() if patch else contextlib.nullcontext()
    with cm:
        _, _, result = timed_call(
            lambda ctx: ready.method.run(ready.state, ctx), ready.runtime, RunContext()
        )
    return ready, result


@contextlib.contextmanager
def patched(module: Any, name: str, wrapper: Callable[[Callable], Callable]) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, wrapper(original))
    try:
        yield
    finally:
        setattr(module, name, original)


# ---- RCTD -----------------------------------------------------------------------------------
def rctd(args: argparse.Namespace) -> None:
    import methods.rctd.doublet as doublet
    import methods.rctd.multi as multi
    from methods.rctd import check

    def truncate_final(module: Any) -> Callable[[], Any]:
        def wrap(fn: Callable) -> Callable:
            def call(*a: Any, **kw: Any) -> Any:
                if not kw.get("score"):
                    kw["max_iter"] = 3
                return fn(*a, **kw)

            return call

        return lambda: patched(module, "solve_subsets", wrap)

    base = ["method=rctd", "hardware=cpu", f"dataset.n_pixels={args.n_pixels}",
            "dataset.noise_sigma=0.3", "dataset.platform_sd=0.3"]  # fmt: skip
    for mode in args.modes.split(","):
        ov = [*base, f"method.mode={mode}"]
        ready, ref = run_variant(ov)
        tol = ready.method.cfg.tol
        variants: dict[str, tuple[list[str], Any]] = {
            "float32 (legit)": (["hardware.dtype=float32"], None),
            "batch_size=500 (legit)": (["method.batch_size=500"], None),
            "qp_sweeps=10 (planted)": (["method.qp_sweeps=10"], None),
            "min_change=2e-3 (planted)": (["method.min_change=2e-3"], None),
        }
        if mode in ("doublet", "multi"):
            module = doublet if mode == "doublet" else multi
            variants["final fit 3 iterations (planted)"] = ([], truncate_final(module))
        print(f"\nRCTD {mode}, {args.n_pixels} pixels (noise 0.3, platform 0.3); tol {tol}")
        for name, (extra, patch) in variants.items():
            _, got = run_variant([*ov, *extra], patch)
            metrics, ok = check.compare(got.outputs, ref.outputs, tol, mode)
            shown = "  ".join(f"{k} {v:.3g}" for k, v in metrics.items())
            print(f"  {name:34} {'close' if ok else 'WRONG':6} {shown}")
            sys.stdout.flush()


# ---- scVI -----------------------------------------------------------------------------------
def scvi(args: argparse.Namespace) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="method", required=True)
    r = sub.add_parser("rctd")
    r.add_argument("--n-pixels", type=int, default=2000)
    r.add_argument("--modes", default="full,doublet,multi")
    s = sub.add_parser("scvi")
    s.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    (rctd if args.method == "rctd" else scvi)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
