"""How often does the loop's keep rule keep an unchanged commit, and what speedup does it catch?

    python benchmarks/loop_noise.py [--decisions 50] [--rounds 9] [overrides...]

Starts two harness workers on this checkout (an A/A pair: the same code), interleaves
``decisions × rounds`` timed runs of each exactly as ``loop try`` does, and applies the keep rule
(``loop.min_gain``, ``loop.k_iqr`` from the config) to each disjoint block of ``rounds`` pairs:
- false-keep rate: blocks kept although A and B are the same code;
- sensitivity: the same real timings with B's times scaled by (1 - s) for s in 2%, 3%, 5%, 10%
  (a planted speedup of exactly s on top of real run-to-run noise): fraction kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.abtest import Worker, decide, interleave
from harness.compose import compose_checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=None, help="default: loop.rounds")
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["method=rctd", "dataset.n_pixels=1000", "hardware=cpu"]
    _, valid = compose_checked(overrides)
    loop = valid.top.loop
    rounds = args.rounds or loop.rounds
    results = (Path.cwd() / valid.top.paths.results).resolve()
    common = [*overrides, f"paths.results={results}", "bench.baseline=off", "tracking.mlflow=false"]
    logs = Path(tempfile.mkdtemp(prefix="loop_noise_"))
    a = Worker(Path.cwd(), common, logs / "a.log", valid.top.bench.timeout_s)
    b = Worker(Path.cwd(), common, logs / "b.log", valid.top.bench.timeout_s)
    try:
        res = interleave(a, b, args.decisions * rounds)
    finally:
        a.close()
        b.close()
    blocks = [
        (res.a[i * rounds : (i + 1) * rounds], res.b[i * rounds : (i + 1) * rounds])
        for i in range(args.decisions)
    ]
    print(
        f"{' '.join(overrides)}: {args.decisions} decisions x {rounds} interleaved pairs, "
        f"min_gain {loop.min_gain:.0%}, k_iqr {loop.k_iqr}"
    )
    median_run = sorted(res.a + res.b)[len(res.a)]
    print(f"median run {median_run:.4f} s")
    for s in (0.0, 0.02, 0.03, 0.05, 0.10):
        kept = sum(
            decide(ta, [t * (1 - s) for t in tb], loop.min_gain, loop.k_iqr).keep
            for ta, tb in blocks
        )
        label = "A/A false-keep rate" if s == 0 else f"planted {s:.0%} speedup kept"
        print(f"{label:28}: {kept}/{len(blocks)} = {kept / len(blocks):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
