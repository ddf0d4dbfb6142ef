"""``python -m harness.compare REV_A REV_B [overrides | tag=T]``: A/B timing of two commits.

Both commits are checked out as git worktrees and measured by the same worker-pair loop and
sequential rule as ``loop try`` (:mod:`harness.optimize.pairs`): fresh worker pairs started in
alternating order, rounds timed from outside in alternating order — on fresh inputs when both
commits' workers speak protocol 2 (and then their outputs are compared round by round), else
repeated runs on the benchmark input — until the interval of B's speed-up is decided or the
budget (``compare.max_pairs``, ``compare.max_seconds``) is spent. Prints the speed-up A→B with
its interval, the per-pair ratios and whether the outputs agree; exits 1 when B is credibly
slower than A by more than ``compare.threshold`` (a CI gate). ``tag=T`` reuses loop T's
frozen overrides.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from harness.core.errors import UserError, print_error


def _overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    revs = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a]
    if len(revs) != 2:
        raise UserError("usage: python -m harness.compare REV_A REV_B [overrides... | tag=T]")
    tags = [o for o in overrides if o.startswith("tag=")]
    if tags:
        from harness.optimize import gitops
        from harness.optimize.state import LoopState

        tag = tags[-1].split("=", 1)[1]
        state = LoopState.load(gitops.git_dir(gitops.repo_at(Path.cwd())), tag)
        overrides = [*state.overrides, *(o for o in overrides if not o.startswith("tag="))]
    return revs, overrides


def _saved(worker: Any, path: Path, digest: Any) -> Any:
    """A worker's last outputs, read here from the raw file it wrote, hashed here."""
    from harness.bench import baseline

    worker.request("save", path=str(path))
    loaded = baseline.load(path, strict=True)
    if loaded is not None:
        loaded.output_hash = digest(loaded.outputs)
    return loaded


def _tier(a: Any, b: Any, method: Any) -> str:
    """B's outputs judged against A's as the loop judges a candidate: exact / close / wrong."""
    from harness.bench.baseline import verdict
    from harness.bench.contract import RunResult

    if a is None or b is None:
        return "missing"
    result = RunResult(outputs=b.outputs, work=b.work)
    return verdict(b.output_hash, result, a, method.compare)[0]


def run(argv: list[str]) -> int:
    from harness.bench.hashing import output_hash, select
    from harness.config.compose import compose_checked
    from harness.optimize import gitops
    from harness.optimize.attempt import clock_for, fresh_fields, launch_for, rule_for
    from harness.optimize.inputs import prepared_run, write_input
    from harness.optimize.pairs import Session, fresh_draw, run_pairs
    from harness.optimize.workers import PairLog, Worker, WorkerFailed

    revs, overrides = _overrides(argv)
    cfg, valid = compose_checked(overrides)

    def digest(outputs: dict[str, Any]) -> str:  # computed here, never taken from a worker
        names = select(outputs, valid.method.hashed_outputs)
        return output_hash(outputs, valid.top.bench.hash_decimals, names)

    repo = gitops.repo_at(Path.cwd())
    shas = []
    for rev in revs:
        try:
            shas.append(repo.commit(rev).hexsha)
        except Exception:
            raise UserError(f"compare: unknown revision '{rev}'") from None
    top = valid.top
    results = (Path.cwd() / top.paths.results).resolve()
    cache = (Path.cwd() / top.paths.cache).resolve()
    common = [*overrides, f"paths.results={results}", f"paths.cache={cache}"]
    common += ["bench.baseline=off", "tracking.mlflow=false"]
    if top.compare.launch.threads > 0:
        common.append(f"hardware.threads={top.compare.launch.threads}")
    trees = [
        gitops.worktree_at(repo, results / "worktrees" / f"compare-{side}", sha)
        for side, sha in zip("ab", shas, strict=True)
    ]
    for side, sha, rev in zip("AB", shas, revs, strict=True):
        print(f"{side} = {rev} ({sha[:12]})", flush=True)
    cmp = top.compare
    rule = rule_for(cmp, neutral=True)
    rule = type(rule)(**{**rule.__dict__, "max_slowdown": cmp.threshold})
    clock = clock_for(cmp, "cuda" if "cuda" in str(top.hardware.device) else "cpu")
    launch = launch_for(cmp.launch)
    logs = results / "compare"
    scratch = results / "compare" / "outputs"
    agreement: dict[str, Any] = {"same": 0, "rounds": 0, "tiers": {}}
    judge: list[Any] = []  # the method's read-only tolerance check, built on first need

    # workers start without an input when the warm round warms them on a drawn one
    lazy = cmp.warm_round and valid.dataset.draw(1) is not None

    def start(side: int) -> Any:
        def make(p: int) -> Worker:
            log = logs / f"{'ab'[side]}-{shas[side][:8]}-{p + 1}.log"
            return Worker(trees[side], common, log, top.bench.timeout_s, launch, lazy=lazy)

        return make

    def play(p: int, a: Worker, b: Worker, session: Session) -> PairLog:
        log = PairLog()
        fresh = a.protocol >= 2 and b.protocol >= 2 and valid.dataset.draw(1) is not None
        files = fresh and a.protocol >= 4 and b.protocol >= 4  # the loop's way (inputs.py)

        def new_input() -> Any:
            fields = fresh_fields(valid.dataset, fresh_draw())
            if files:
                return write_input(valid.dataset, fields, scratch)
            for w in (a, b):
                w.request("input", fields=fields)
            return None

        def timed(w: Worker, inp: Any) -> Any:
            if files:
                return prepared_run(w, inp)
            return w.timed("time" if fresh else "run")

        if cmp.warm_round:  # untimed, on an input of its own: a fresh worker's first run is slow
            t0 = time.monotonic()
            inp = new_input() if fresh else None
            for w in (a, b):
                timed(w, inp)
            session.warmup_s += time.monotonic() - t0
        r = 0
        while r < cmp.rounds:
            t0 = time.monotonic()
            inp = new_input() if fresh else None
            session.inputs_s += time.monotonic() - t0
            a_first = (p + r) % 2 == 0
            t0 = time.monotonic()
            first, second = (a, b) if a_first else (b, a)
            x, y = timed(first, inp), timed(second, inp)
            session.runs_s += time.monotonic() - t0
            if not session.disturbed((x, y), cmp.disturbed, cmp.max_reruns):
                log.kept.append(x if a_first else y)
                log.candidate.append(y if a_first else x)
                r += 1
            if fresh:
                out_a, out_b = (
                    _saved(w, scratch / f"{side}.npz", digest)
                    for w, side in zip((a, b), "ab", strict=True)
                )
                if not judge:
                    from harness.bench.runner import Benchmark
                    from harness.sinks.console import Reporter

                    judge.append(
                        Benchmark(cfg, valid, overrides, Reporter(sys.stderr, rich=False)).build()
                    )
                tier = _tier(out_a, out_b, judge[0])
                agreement["rounds"] += 1
                agreement["same"] += tier == "exact"
                agreement["tiers"][tier] = agreement["tiers"].get(tier, 0) + 1
        return log

    try:
        decision, session = run_pairs(start(0), start(1), play, rule, clock, cmp.max_seconds)
    except WorkerFailed as exc:
        raise UserError(f"compare: a worker failed ({exc.status}: {exc}); see {logs}") from None
    ratios = [p.mean_log_ratio(clock) for p in session.pairs]
    speed = decision.speedup
    lo = 1 / (1 - decision.gain_lo) if decision.gain_lo < 1 else float("inf")
    hi = 1 / (1 - decision.gain_hi) if decision.gain_hi < 1 else float("inf")
    print(
        f"speed-up A→B: {speed:.3f}x  [{lo:.3f}, {hi:.3f}]  ({clock} clock, "
        f"{len(session.pairs)} worker pairs × {cmp.rounds} rounds, {session.breakdown()})"
    )
    print("B/A ratio per worker pair: " + "  ".join(f"{math.exp(d):.3f}" for d in ratios))
    if agreement["rounds"]:
        tiers = agreement["tiers"]
        others = ", ".join(
            f"{n} {t}" + (" (within the method's tolerance)" if t == "close" else "")
            for t, n in sorted(tiers.items())
            if t != "exact"
        )
        print(
            f"outputs of B vs A: identical on {agreement['same']}/{agreement['rounds']} fresh "
            f"inputs" + (f"; {others}" if others else "")
            + ("; B is WRONG on some inputs (outside the tolerance)" if "wrong" in tiers else "")
        )  # fmt: skip
    if decision.stop == "futile":
        print(f"REGRESSION: B is credibly slower than A by more than {cmp.threshold:.0%}")
        return 1
    verdict = "not slower" if decision.action == "keep" else "inconclusive"
    print(f"B vs A (threshold {cmp.threshold:.0%}): {verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        print_error(exc)
        return 2
