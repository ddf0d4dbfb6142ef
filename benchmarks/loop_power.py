"""The loop's decision rule on real runs: false keeps, power, and the cost of a decision.

    python benchmarks/loop_power.py collect --pairs 60 --out aa.json [overrides...]
    python benchmarks/loop_power.py collect --pairs 30 --busy 0.05 --out planted.json [overrides...]
    python benchmarks/loop_power.py analyse aa.json [--planted planted.json] [--decisions 2000]

``collect`` plays worker pairs exactly as ``loop try`` does — a fresh reference worker and a
fresh candidate worker of this checkout, started in alternating order, ``loop.rounds`` rounds
each on a fresh input the judge loads and hands over as a file, read + prepare + run timed
from outside in alternating order, with the
loop's launch settings — and stores every round's wall and CPU times and each pair's cost.
With ``--busy S`` the reference side is a copy of this checkout whose RCTD solver burns S
seconds of CPU per call (a real planted change: the candidate is faster by S/(T+S)).

``analyse`` applies the sequential rule (``loop.*``) to sequences of real pairs drawn at random
from the collection: A/A decisions (the false-keep rate with its 95% upper bound), planted
speed-ups of 2/3/5/10% (each pair's log ratio shifted by log(1 − s): real noise, known gain),
the real planted change, and the wall time of a decision (pair costs summed as drawn).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.compose import compose_checked
from harness.optimize.attempt import clock_for, fresh_fields, launch_for, rule_for
from harness.optimize.decide import decide
from harness.optimize.inputs import prepared_run, write_input
from harness.optimize.pairs import fresh_draw
from harness.optimize.workers import Worker

BUSY = """
def _planted_busy(seconds: float = {busy}) -> None:
    import time as _t
    end = _t.perf_counter() + seconds
    while _t.perf_counter() < end:
        pass
"""


def _planted_tree(busy: float) -> Path:
    """A copy of this checkout's tracked files whose ``solve_irwls`` first burns ``busy`` s."""
    tree = Path(tempfile.mkdtemp(prefix="planted_"))
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout
    for rel in files.split():
        dst = tree / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rel, dst)
    solver = tree / "methods" / "rctd" / "solver.py"
    text = solver.read_text()
    head, sep, body = text.partition("def solve_irwls(")
    first = body.index('"""', body.index('"""') + 3) + 3  # after the docstring
    body = body[:first] + "\n    _planted_busy()" + body[first:]
    solver.write_text(head + BUSY.format(busy=busy) + "\n\n" + sep + body)
    return tree


def collect(args: argparse.Namespace, overrides: list[str]) -> None:
    _, valid = compose_checked(overrides)
    loop = valid.top.loop
    results = (Path.cwd() / valid.top.paths.results).resolve()
    common = [*overrides, f"paths.results={results}", "bench.baseline=off", "tracking.mlflow=false"]
    if loop.launch.threads > 0:
        common.append(f"hardware.threads={loop.launch.threads}")
    launch = launch_for(loop.launch)
    ref_tree = _planted_tree(args.busy) if args.busy else Path.cwd()
    logs = Path(tempfile.mkdtemp(prefix="loop_power_"))
    templates = _templates(loop, ref_tree, common, logs, launch)
    pairs = []
    for p in range(args.pairs):
        t0 = time.monotonic()
        sides = [("ref", ref_tree), ("cand", Path.cwd())]
        order = sides if p % 2 == 0 else sides[::-1]
        if templates:  # forked alike, lazy: one untimed warm run each on an input of its own
            started = {name: templates[name].fork(logs / f"{name}-{p}.log") for name, _ in order}
            inp = write_input(valid.dataset, fresh_fields(valid.dataset, fresh_draw()), logs)
            for name, _ in order:
                prepared_run(started[name], inp)
            inp.remove()
        else:
            started = {
                name: Worker(tree, common, logs / f"{name}.log", 900.0, launch)
                for name, tree in order
            }
        startup = time.monotonic() - t0
        rounds = []
        try:
            for r in range(loop.rounds):
                fields = fresh_fields(valid.dataset, fresh_draw())
                inp = write_input(valid.dataset, fields, logs)
                first = ("ref", "cand") if (p + r) % 2 == 0 else ("cand", "ref")
                t = {name: prepared_run(started[name], inp) for name in first}
                inp.remove()
                rounds.append({k: [v.wall, v.cpu] for k, v in t.items()})
        finally:
            for w in started.values():
                w.close()
        pairs.append({"rounds": rounds, "seconds": time.monotonic() - t0, "startup": startup})
        ratios = [math.log(x["cand"][0] / x["ref"][0]) for x in rounds]
        print(f"pair {p + 1}/{args.pairs}: mean log ratio {np.mean(ratios):+.4f} "
              f"({pairs[-1]['seconds']:.1f} s)", flush=True)  # fmt: skip
    for template in templates.values():
        template.close()
    args.out.write_text(json.dumps({"overrides": overrides, "busy": args.busy, "pairs": pairs}))


def _templates(loop: Any, ref_tree: Path, common: list[str], logs: Path, launch: Any) -> dict:
    """With ``loop.launch.fork``: a template per side, as ``loop try`` makes them."""
    if not loop.launch.fork:
        return {}
    from harness.optimize.template import Template

    trees = {"ref": ref_tree, "cand": Path.cwd()}
    return {
        name: Template(tree, common, logs / f"{name}-template.log", 900.0, launch)
        for name, tree in trees.items()
    }


def pair_stats(data: dict, clock: str) -> tuple[np.ndarray, np.ndarray]:
    k = 0 if clock == "wall" else 1
    stats = [
        np.mean([math.log(r["cand"][k] / r["ref"][k]) for r in p["rounds"]]) for p in data["pairs"]
    ]
    return np.array(stats), np.array([p["seconds"] for p in data["pairs"]])


def simulate(stats, costs, rule, shift, n, rng) -> tuple[float, list[float], list[int]]:
    keeps, times, used = 0, [], []
    for _ in range(n):
        order = rng.permutation(len(stats))
        seen = []
        for i in order[: rule.max_pairs]:
            seen.append(stats[i] + shift)
            d = decide(seen, rule)
            if d.action != "continue":
                break
        keeps += d.action == "keep"
        times.append(float(sum(costs[order[: len(seen)]])))
        used.append(len(seen))
    return keeps / n, times, used


def upper95(k: int, n: int) -> float:
    from scipy.stats import beta

    return float(beta.ppf(0.95, k + 1, n - k)) if k < n else 1.0


def analyse(args: argparse.Namespace, overrides: list[str]) -> None:
    data = json.loads(args.data.read_text())
    _, valid = compose_checked(data["overrides"] + overrides)
    loop = valid.top.loop
    rule = rule_for(loop)
    clock = clock_for(loop, "cpu")
    stats, costs = pair_stats(data, clock)
    rng = np.random.default_rng(0)
    print(f"{len(stats)} real A/A pairs ({' '.join(data['overrides'])}), clock {clock}")
    print(f"pair statistic sd {np.std(stats, ddof=1):.2%} (rule floor loop.pair_sd {rule.pair_sd:.2%}); "
          f"pair cost median {np.median(costs):.1f} s")  # fmt: skip
    print(f"rule: min_gain {rule.min_gain:.0%}, alpha {rule.alpha}, pairs {rule.min_pairs}-{rule.max_pairs}, "
          f"{loop.rounds} rounds/pair; {args.decisions} decisions drawn from the real pairs")  # fmt: skip
    print(
        f"{'case':28} {'kept':>8} {'95% upper':>10} {'pairs (median)':>15} {'time median':>12} {'p95':>7}"
    )
    for s in (0.0, 0.02, 0.03, 0.05, 0.10):
        rate, times, used = simulate(stats, costs, rule, math.log1p(-s), args.decisions, rng)
        label = "A/A (false keeps)" if s == 0 else f"planted {s:.0%} (scaled)"
        k = round(rate * args.decisions)
        print(f"{label:28} {rate:8.1%} {upper95(k, args.decisions) if s == 0 else float('nan'):10.2%} "
              f"{np.median(used):15.0f} {np.median(times):11.0f}s {np.percentile(times, 95):6.0f}s")  # fmt: skip
    if args.planted:
        planted = json.loads(args.planted.read_text())
        pstats, pcosts = pair_stats(planted, clock)
        ref = np.median([r["ref"][0] for p in planted["pairs"] for r in p["rounds"]])
        gain = planted["busy"] / ref
        rate, times, used = simulate(pstats, pcosts, rule, 0.0, args.decisions, rng)
        print(f"{'real planted ' + format(gain, '.1%'):28} {rate:8.1%} {'':>10} {np.median(used):15.0f} "
              f"{np.median(times):11.0f}s {np.percentile(times, 95):6.0f}s  "
              f"(measured gain {1 - math.exp(np.mean(pstats)):+.2%})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--pairs", type=int, default=60)
    c.add_argument("--busy", type=float, default=0.0)
    c.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("analyse")
    a.add_argument("data", type=Path)
    a.add_argument("--planted", type=Path, default=None)
    a.add_argument("--decisions", type=int, default=2000)
    args, overrides = parser.parse_known_args()
    if args.command == "collect":
        overrides = overrides or [
            "method=rctd", "dataset.n_pixels=1000", "method.sigma_override=100", "hardware=cpu",
        ]  # fmt: skip
        collect(args, overrides)
    else:
        analyse(args, overrides)
    random.seed(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
