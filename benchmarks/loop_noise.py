"""How often does the loop's keep rule keep an unchanged commit, and what speedup does it catch?

    python benchmarks/loop_noise.py [--decisions 20] [--rounds R] [--pairs P] [overrides...]

For each decision, measures this checkout against itself (an A/A test: the same code) exactly
as ``loop try`` does: ``rounds`` interleaved runs spread over ``pairs`` fresh pairs of worker
processes (start order alternating), then applies the keep rule (``loop.min_gain``,
``loop.k_iqr``, per-pair agreement when pairs > 1). Prints
- false-keep rate: decisions kept although A and B are the same code;
- sensitivity: the same real timings with B's times scaled by (1 - s) for s in 2%, 3%, 5%, 10%
  (a planted speedup of exactly s on top of real noise): fraction kept;
- for comparison, the rule without the per-pair check, and the spread of the per-pair A/B
  ratios (the per-process bias the fresh pairs expose).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness.config.compose import compose_checked
from harness.optimize.workers import (
    Interleaved,
    Worker,
    decide,
    interleave,
    pair_slices,
    split_rounds,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=None, help="default: loop.rounds")
    parser.add_argument("--pairs", type=int, default=None, help="default: loop.pairs")
    parser.add_argument("--save", type=Path, default=None, help="write the raw timings (JSON)")
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["method=rctd", "dataset.n_pixels=1000", "hardware=cpu"]
    _, valid = compose_checked(overrides)
    loop = valid.top.loop
    rounds, pairs = args.rounds or loop.rounds, args.pairs or loop.pairs
    results = (Path.cwd() / valid.top.paths.results).resolve()
    common = [*overrides, f"paths.results={results}", "bench.baseline=off", "tracking.mlflow=false"]
    logs = Path(tempfile.mkdtemp(prefix="loop_noise_"))
    decisions: list[Interleaved] = []
    for i in range(args.decisions):
        res = Interleaved()
        for p, n in enumerate(split_rounds(rounds, pairs)):
            order = ("a", "b") if p % 2 == 0 else ("b", "a")
            started = {r: Worker(Path.cwd(), common, logs / f"{r}.log", 600.0) for r in order}
            try:
                interleave(started["a"], started["b"], n, res)
            finally:
                for w in started.values():
                    w.close()
        decisions.append(res)
        print(f"decision {i + 1}/{args.decisions}: A/B {_ratio(res.a, res.b):.3f}", flush=True)
    if args.save:
        raw = [{"a": d.a, "b": d.b, "groups": d.groups} for d in decisions]
        args.save.write_text(json.dumps({"overrides": overrides, "decisions": raw}))
    print(
        f"{' '.join(overrides)}: {args.decisions} decisions x {rounds} interleaved pairs of runs "
        f"over {pairs} worker pairs; min_gain {loop.min_gain:.0%}, k_iqr {loop.k_iqr}"
    )
    every = [t for d in decisions for t in d.a + d.b]
    print(f"median run {float(np.median(every)):.4f} s")
    bias = [_ratio(d.a[s], d.b[s]) for d in decisions for s in pair_slices(d.groups)]
    print(f"per worker pair median A/B ratio: sd {np.std(bias):.2%} over {len(bias)} pairs")
    for s in (0.0, 0.02, 0.03, 0.05, 0.10):
        label = "A/A false-keep rate" if s == 0 else f"planted {s:.0%} speedup kept"
        kept = [0, 0]
        for d in decisions:
            b = [t * (1 - s) for t in d.b]
            kept[0] += decide(d.a, b, loop.min_gain, loop.k_iqr, d.groups).keep
            kept[1] += decide(d.a, b, loop.min_gain, loop.k_iqr).keep
        n = len(decisions)
        print(f"{label:28}: {kept[0]}/{n} = {kept[0] / n:5.1%}  (without the per-pair check: "
              f"{kept[1] / n:5.1%})")  # fmt: skip
    return 0


def _ratio(a: list[float], b: list[float]) -> float:
    return float(np.median(a) / np.median(b))


if __name__ == "__main__":
    sys.exit(main())
