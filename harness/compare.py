"""``python -m harness.compare REV_A REV_B [overrides]``: A/B timing of two commits.

Both commits are checked out as git worktrees and benchmarked by two long-lived workers whose
runs alternate (A B B A ...) on this machine, so drift and noise hit both alike. Prints each
side's median and IQR, the paired ratio B/A with its spread, and whether the outputs are
identical. Exits 1 when B is slower than A by more than ``compare.threshold`` (a CI gate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from harness.errors import UserError


def main(argv: list[str] | None = None) -> int:
    from harness import gitops
    from harness.abtest import Worker, WorkerFailed, interleave
    from harness.compose import compose_checked
    from harness.protocol import iqr

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
        workers = []
        try:
            for side, sha in zip("ab", shas, strict=True):
                tree = gitops.worktree_at(repo, results / "worktrees" / f"compare-{side}", sha)
                log = results / "compare" / f"{side}-{sha[:8]}.log"
                print(
                    f"{side.upper()} = {revs['ab'.index(side)]} ({sha[:12]}): starting", flush=True
                )
                workers.append(Worker(tree, common, log, valid.top.bench.timeout_s))
            res = interleave(workers[0], workers[1], valid.top.compare.rounds)
        except WorkerFailed as exc:
            raise UserError(
                f"compare: a worker failed ({exc.status}: {exc}); see {results / 'compare'}"
            ) from None
        finally:
            for w in workers:
                w.close()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a, b = np.array(res.a), np.array(res.b)
    ratios = b / a  # paired: run i of A and run i of B were taken back to back
    med, lo, hi = np.median(ratios), np.percentile(ratios, 25), np.percentile(ratios, 75)
    same = set(res.a_hashes) == set(res.b_hashes) and len(set(res.a_hashes)) == 1
    print(f"A {revs[0]:>14}: median {np.median(a):.4f} s  IQR {iqr(res.a):.4f}  n {len(a)}")
    print(f"B {revs[1]:>14}: median {np.median(b):.4f} s  IQR {iqr(res.b):.4f}  n {len(b)}")
    print(f"ratio B/A: {med:.3f}  (paired IQR {lo:.3f} - {hi:.3f}); speedup A/B {1 / med:.3f}x")
    print(f"outputs: {'identical hash ' + res.a_hashes[0] if same else 'DIFFER'}")
    threshold = valid.top.compare.threshold
    if med > 1 + threshold:
        print(f"REGRESSION: B is {med - 1:.1%} slower than A (threshold {threshold:.0%})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
