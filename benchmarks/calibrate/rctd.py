"""RCTD: float32 and another batch size (legitimate) against fewer QP sweeps, a looser
convergence threshold and a truncated final fit (planted), per mode.

    python benchmarks/calibrate_tolerances.py rctd [--n-pixels 2000] [--modes full,doublet,multi]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from calibrate.common import patched, run_variant


def run(args: argparse.Namespace) -> None:
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


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rctd", help="RCTD (full, doublet, multi)")
    p.add_argument("--n-pixels", type=int, default=2000)
    p.add_argument("--modes", default="full,doublet,multi")
    p.set_defaults(func=run)
