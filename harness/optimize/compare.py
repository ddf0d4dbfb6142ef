"""``python -m harness.compare REV_A REV_B [overrides]``: A/B timing of two commits.

Both commits are checked out as git worktrees and benchmarked by long-lived workers whose runs
alternate (A B B A ...) on this machine, so drift and noise hit both alike; the rounds are spread
over ``compare.pairs`` fresh worker pairs (start order alternating), because one process can be
several per cent slower than another running the same code for its whole life. Prints each
side's median and IQR, the paired ratio B/A with its spread, and whether the outputs are
identical. Exits 1 when B is slower than A by more than ``compare.threshold`` (a CI gate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from harness.core.errors import UserError, print_error


def main(argv: list[str] | None = None) -> int:
    from harness.bench.protocol import iqr
    from harness.config.compose import compose_checked
    from harness.optimize import gitops
    from harness.optimize.workers import (
        Interleaved,
        Worker,
        WorkerFailed,
        interleave,
        pair_slices,
        split_rounds,
    )

    argv = sys.argv[1:] if argv is None else argv
    try:
        revs = [a for a in argv if "=" not in a]
        overrides = [a for a in argv if "=" in a]
        if len(revs) != 2:
            raise UserError("usage: python -m harness.compare REV_A REV_B [overrides...]")
        cfg, valid = compose_checked(overrides)
        repo = gitops.repo_at(Path.cwd())
        shas = []
        for rev in revs:
            try:
                shas.append(repo.commit(rev).hexsha)
            except Exception:
                raise UserError(f"compare: unknown revision '{rev}'") from None
        results = (Path.cwd() / valid.top.paths.results).resolve()
        cache = (Path.cwd() / valid.top.paths.cache).resolve()
        common = [*overrides, f"paths.results={results}", f"paths.cache={cache}"]
        common += ["bench.baseline=off", "tracking.mlflow=false"]
        trees = [
            gitops.worktree_at(repo, results / "worktrees" / f"compare-{side}", sha)
            for side, sha in zip("ab", shas, strict=True)
        ]
        for side, sha in zip("AB", shas, strict=True):
            print(f"{side} = {revs['AB'.index(side)]} ({sha[:12]})", flush=True)
        res = Interleaved()
        cmp = valid.top.compare
        for pair, rounds in enumerate(split_rounds(cmp.rounds, cmp.pairs)):
            print(f"worker pair {pair + 1}/{cmp.pairs}: {rounds} rounds", flush=True)
            order = [0, 1] if pair % 2 == 0 else [1, 0]  # who starts first alternates
            workers: dict[int, Worker] = {}
            try:
                for i in order:
                    log = results / "compare" / f"{'ab'[i]}-{shas[i][:8]}-{pair + 1}.log"
                    workers[i] = Worker(trees[i], common, log, valid.top.bench.timeout_s)
                interleave(workers[0], workers[1], rounds, res)
            except WorkerFailed as exc:
                raise UserError(
                    f"compare: a worker failed ({exc.status}: {exc}); see {results / 'compare'}"
                ) from None
            finally:
                for w in workers.values():
                    w.close()
    except UserError as exc:
        print_error(exc)
        return 2
    a, b = np.array(res.a), np.array(res.b)
    ratios = b / a  # paired: run i of A and run i of B were taken back to back
    med, lo, hi = np.median(ratios), np.percentile(ratios, 25), np.percentile(ratios, 75)
    same = set(res.a_hashes) == set(res.b_hashes) and len(set(res.a_hashes)) == 1
    print(f"A {revs[0]:>14}: median {np.median(a):.4f} s  IQR {iqr(res.a):.4f}  n {len(a)}")
    print(f"B {revs[1]:>14}: median {np.median(b):.4f} s  IQR {iqr(res.b):.4f}  n {len(b)}")
    print(f"ratio B/A: {med:.3f}  (paired IQR {lo:.3f} - {hi:.3f}); speedup A/B {1 / med:.3f}x")
    if len(res.groups) > 1:
        per_pair = [float(np.median(ratios[s])) for s in pair_slices(res.groups)]
        print("ratio B/A per worker pair: " + "  ".join(f"{r:.3f}" for r in per_pair))
    print(f"outputs: {'identical hash ' + res.a_hashes[0] if same else 'DIFFER'}")
    threshold = valid.top.compare.threshold
    if med > 1 + threshold:
        print(f"REGRESSION: B is {med - 1:.1%} slower than A (threshold {threshold:.0%})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
