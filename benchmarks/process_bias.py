"""How different are two processes running the same code? Per-process timing bias, by launch
setting (threads, CPU pinning, ASLR, malloc) and clock (wall vs kernel-accounted CPU time).

    python benchmarks/process_bias.py [--procs 8] [--rounds 8] [--variants a,b] [overrides...]

For each launch variant, starts ``--procs`` workers of this checkout (the loop's worker), then
for each round draws a fresh input (a new dataset seed), prepares it in every worker (untimed)
and times one run in each, round-robin (start position rotating), measured from outside as the
loop's judge does. A process's bias is its mean log deviation from the round's mean over
processes; the table prints the standard deviation of the biases across processes (what a
fresh worker pair carries for its whole life) and the within-process noise (the residual sd),
both relative, for the wall clock and for CPU time.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
from pathlib import Path

import numpy as np

from harness.config.compose import compose_checked
from harness.optimize.workers import Launch, Worker

MALLOC = (
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_MMAP_THRESHOLD_", "4294967296"),
    ("MALLOC_TRIM_THRESHOLD_", "4294967296"),
    ("MALLOC_TOP_PAD_", "268435456"),
)
ONE_THREAD = (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"))
PIN = ("taskset", "-c", "1")
NO_ASLR = ("setarch", platform.machine(), "-R")
VARIANTS: dict[str, tuple[list[str], Launch]] = {
    "default": ([], Launch()),
    "t1": (["hardware.threads=1"], Launch(env=ONE_THREAD)),
    "t1+pin": (["hardware.threads=1"], Launch(PIN, ONE_THREAD)),
    "t1+noaslr": (["hardware.threads=1"], Launch(NO_ASLR, ONE_THREAD)),
    "t1+malloc": (["hardware.threads=1"], Launch((), ONE_THREAD + MALLOC)),
    "t1+all": (["hardware.threads=1"], Launch(PIN + NO_ASLR, ONE_THREAD + MALLOC)),
    # the loop's launch (loop.launch defaults), fresh processes vs forked from one template
    "loop": (["hardware.threads=1"], Launch(NO_ASLR, ONE_THREAD + MALLOC)),
    "loop+fork": (["hardware.threads=1"], Launch(NO_ASLR, ONE_THREAD + MALLOC)),
}
FORKED = {"loop+fork"}  # workers forked from a template (harness/optimize/template.py)


def measure(
    overrides: list[str], launch: Launch, procs: int, rounds: int, seed: int, logs: Path,
    fork: bool = False,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Log run times (rounds × procs) per clock. ``fork``: the workers are forked from one
    template (lazy: each warms up once, untimed, on an input of its own)."""
    rng = random.Random(seed)
    template = None
    if fork:
        from harness.optimize.template import Template

        template = Template(Path.cwd(), overrides, logs / "template.log", 900.0, launch)
        workers = [template.fork(logs / f"w{i}.log") for i in range(procs)]
        for w in workers:
            w.request("input", fields={"seed": rng.randrange(1, 2**31)})
            w.request("time")
    else:
        workers = [
            Worker(Path.cwd(), overrides, logs / f"w{i}.log", 900.0, launch) for i in range(procs)
        ]
    wall = np.zeros((rounds, procs))
    cpu = np.zeros((rounds, procs))
    try:
        for r in range(rounds):
            draw = rng.randrange(1, 2**31)
            for w in workers:
                w.request("input", fields={"seed": draw})
            order = list(range(procs))
            order = order[r % procs :] + order[: r % procs]
            for p in order:
                t = workers[p].timed()
                wall[r, p], cpu[r, p] = t.wall, t.cpu
    finally:
        for w in workers:
            w.close()
        if template is not None:
            template.close()
    return {"wall": np.log(wall), "cpu": np.log(cpu)}


def summarise(logt: np.ndarray) -> tuple[float, float]:
    """(sd of per-process biases, within-process residual sd), relative."""
    dev = logt - logt.mean(axis=1, keepdims=True)  # remove the round (input) effect
    bias = dev.mean(axis=0)
    resid = dev - bias[None, :]
    rounds, procs = logt.shape
    noise = float(np.sqrt((resid**2).sum() / ((rounds - 1) * (procs - 1))))
    return float(np.std(bias, ddof=1)), noise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save", type=Path, default=None)
    args, overrides = parser.parse_known_args()
    overrides = overrides or [
        "method=rctd", "dataset.n_pixels=1000", "method.sigma_override=100", "hardware=cpu",
    ]  # fmt: skip
    _, valid = compose_checked(overrides)
    results = (Path.cwd() / valid.top.paths.results).resolve()
    common = [*overrides, f"paths.results={results}", "bench.baseline=off", "tracking.mlflow=false"]
    logs = Path(tempfile.mkdtemp(prefix="process_bias_"))
    raw: dict[str, dict[str, list]] = {}
    print(f"{' '.join(overrides)}: {args.procs} processes x {args.rounds} fresh inputs")
    print(f"{'variant':12} {'median s':>9} {'bias sd wall':>13} {'noise wall':>11} "
          f"{'bias sd cpu':>12} {'noise cpu':>10}")  # fmt: skip
    for name in args.variants.split(","):
        extra, launch = VARIANTS[name]
        logt = measure([*common, *extra], launch, args.procs, args.rounds, args.seed, logs,
                       fork=name in FORKED)  # fmt: skip
        bw, nw = summarise(logt["wall"])
        bc, nc = summarise(logt["cpu"])
        med = float(np.exp(np.median(logt["wall"])))
        print(f"{name:12} {med:9.3f} {bw:13.2%} {nw:11.2%} {bc:12.2%} {nc:10.2%}", flush=True)
        raw[name] = {k: v.tolist() for k, v in logt.items()}
    if args.save:
        args.save.write_text(json.dumps({"overrides": overrides, "log_times": raw}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
