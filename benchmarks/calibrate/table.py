"""The printed table of a trainer's calibration: the reference, the variants (each run under
its patch, or its inference alone on the reference's replayed training), the verdict the
harness would give under the current tolerances, every compare metric, the work counters that
differ, and per metric the legitimate worst against the tolerance; runs can be stored and the
table printed again from them.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from calibrate.common import HITS, Replay, run_variant, stacked
from harness.bench.baseline import work_mismatch
from harness.bench.contract import RunResult


@dataclass
class Variant:
    name: str
    kind: str  # legit | seed | planted
    overrides: list[str] = field(default_factory=list)
    patch: Callable[[], Any] | None = None
    replay: bool = False  # inference-only: the reference's training is replayed
    max_steps: Callable[[Any], int | None] | None = None


def identical(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if sp.issparse(x) or sp.issparse(y):
            x, y = sp.csr_matrix(x), sp.csr_matrix(y)
            if x.shape != y.shape or (x != y).nnz:
                return False
        elif not np.array_equal(np.asarray(x), np.asarray(y)):
            return False
    return True


def shapes_differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [k for k in b if k in a and getattr(a[k], "shape", None) != getattr(b[k], "shape", None)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else str(v)


def calibrate(
    title: str,
    base: list[str],
    variants: list[Variant],
    compare: Callable[[Any, Any, Any], tuple[dict[str, float], bool]],
    replay: Replay | None = None,
    args: Any = None,
) -> None:
    """Run the reference and every variant; print one row each: the verdict the harness would
    give under the current tolerances (``wrong`` by work counters, output shapes or the
    tolerance), every compare metric, the work counters that differ; then per metric the
    legitimate worst and the planted mildest against the tolerance. ``args.only``: the variants
    whose names contain one of these (comma-separated); ``args.save``: a folder where every
    run's outputs and work counters are stored (one .npz each, the baseline format);
    ``args.reuse``: print the table from such a folder instead of running (recompute the
    metrics after a change of ``check.compare`` without training again)."""
    from harness.api import prepared
    from harness.bench import baseline

    only = getattr(args, "only", "")
    folder = Path(args.save or args.reuse) if args and (args.save or args.reuse) else None
    reuse = bool(args and args.reuse)

    def result(name: str, run: Callable[[], RunResult]) -> RunResult:
        path = folder / f"{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}.npz" if folder else None
        if reuse and path is not None:
            stored = baseline.load(path)
            assert stored is not None, f"no stored run {path}"
            return RunResult(outputs=stored.outputs, work=stored.work)
        got = run()
        if path is not None:
            baseline.save(path, "", got.outputs, {"variant": name}, got.work)
        return got

    t0 = time.perf_counter()
    if reuse:
        tol = prepared(base).method.cfg.tol
    ref = result("reference", lambda: run_variant(base, replay.record if replay else None)[1])
    if not reuse:
        tol = prepared(base).method.cfg.tol
    print(f"\n{title}\n  overrides {' '.join(base)}\n  tol {tol}")
    print(f"  reference {time.perf_counter() - t0:.0f} s; work {ref.work}")
    rep_work = ref.work
    if replay and any(v.replay for v in variants):
        rep = result("reference_replayed", lambda: run_variant(base, replay.replay)[1])
        rep_work = rep.work
        same = "identical outputs" if identical(rep.outputs, ref.outputs) else "OUTPUTS DIFFER"
        print(f"  reference with its training replayed: {same}; work {rep.work}")
    rows: list[tuple[Variant, dict[str, float]]] = []
    for v in variants:
        if only and not any(s in v.name for s in only.split(",")):
            continue
        HITS.clear()
        t = time.perf_counter()
        patch = v.patch
        if v.replay and replay:
            patch = stacked(replay.replay, v.patch) if v.patch else replay.replay
        got = result(v.name, lambda v=v, patch=patch: run_variant(
            [*base, *v.overrides], patch, v.max_steps)[1])  # fmt: skip
        metrics, ok = compare(got.outputs, ref.outputs, tol)
        differ = work_mismatch(got.work, rep_work if v.replay else ref.work)
        shapes = shapes_differ(got.outputs, ref.outputs)
        why = [w for w, bad in (("work", differ), ("shape", shapes), ("tol", not ok)) if bad]
        verdict = "wrong" if why else "close"
        if identical(got.outputs, ref.outputs) and not differ:
            verdict = "exact"
        shown = "  ".join(f"{k} {_fmt(x)}" for k, x in metrics.items())
        label = f"{v.name} ({v.kind})"
        took = "" if reuse else f"  [{time.perf_counter() - t:.0f} s]"
        print(f"  {label:54} {verdict:5} {'+'.join(why):16} {shown}{took}")
        if differ:
            base_work = rep_work if v.replay else ref.work
            pairs = ", ".join(f"{k}: {got.work.get(k)} vs {base_work.get(k)}" for k in differ)
            print(f"  {'':54} work {{{pairs}}}")
        if shapes:
            print(f"  {'':54} shapes differ: {', '.join(shapes)}")
        hits = {k for k in HITS if not (v.replay and replay and k == replay.name)}
        if v.patch and not reuse and not hits:
            print(f"  {'':54} NOTE: the patch was never called (the method changed?)")
        sys.stdout.flush()
        rows.append((v, metrics))
    summary(rows, tol)
    print(f"  total {time.perf_counter() - t0:.0f} s")


def add_common(p: Any) -> None:
    """The flags every trainer calibration takes."""
    p.add_argument("--only", default="", help="variants whose name contains one of these")
    p.add_argument("--save", default="", help="store every run's outputs in this folder")
    p.add_argument("--reuse", default="", help="print the table from a --save folder")


AGREEMENT = ("agreement", "overlap")  # metrics where higher is closer


def summary(rows: list[tuple[Variant, dict[str, float]]], tol: Any) -> None:
    """Per metric: the legitimate worst (seed-to-seed apart), its share of the tolerance, and
    the planted mildest."""
    names = [k for k in rows[0][1]] if rows else []
    print("  metric                   tolerance   legit worst (share)   seed     planted mildest")
    for k in names:
        hi = any(s in k for s in AGREEMENT)
        limit = getattr(tol, k, float("nan"))

        def worst(kind: str, mildest: bool = False, k: str = k, hi: bool = hi) -> float:
            vals = [m[k] for v, m in rows if v.kind == kind and k in m]
            if not vals:
                return float("nan")
            return (max if hi == mildest else min)(vals)

        legit, seed, planted = worst("legit"), worst("seed"), worst("planted", mildest=True)
        share = (1 - legit) / (1 - limit) if hi else legit / limit if limit else float("nan")
        print(f"  {k:24} {_fmt(limit):11} {_fmt(legit):>10} ({share:5.2f})      "
              f"{_fmt(seed):8} {_fmt(planted)}")  # fmt: skip
