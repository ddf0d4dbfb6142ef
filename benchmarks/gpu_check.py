"""The GPU check pack: one command that proves every method, the memory models and the judge on
a CUDA device, and tabulates what it measured.

    python benchmarks/gpu_check.py                          # CUDA, hardware=auto, ~8 min on an H100
    python benchmarks/gpu_check.py --hardware h100 --out results/gpu
    python benchmarks/gpu_check.py --only methods,memory --methods rctd,scvi
    python benchmarks/gpu_check.py --device cpu --tiny      # the same code paths, toy sizes

Checks (``benchmarks/gpucheck/``, one module each): 1 ``methods`` — each method with the
hardware profile: a baseline, a rerun (run-to-run stability), float32 / bf16 autocast /
torch.compile variants judged against the baseline; 2 ``agree`` — device vs CPU on one input
by the method's tolerance; 3 ``memory`` — RCTD ``batch_size=auto`` and CellBender's posterior,
measured peak vs predicted; 4 ``judge`` — ``harness.compare`` A/A and a planted slowdown on
RCTD; 5 ``loader`` — scVI's stream loader, cells/s with 0/2/8 workers; 6 ``peer`` — RCTD vs
rctd-py (skipped without it). Writes ``<out>/gpu_check.md`` and ``<out>/gpu_check.json``, prints
the tables, exits 1 when a row failed (a crash, an unstable rerun, a variant the method's
tolerance rejects), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO))  # harness and methods from this checkout (the script dir is [0])

CHECKS = ("methods", "agree", "memory", "judge", "loader", "peer")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--hardware", default=None,
                   help="profile of the device runs (default: auto on cuda, cpu on cpu)")  # fmt: skip
    p.add_argument("--tiny", action="store_true", help="toy sizes (seconds per run)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "gpu")
    p.add_argument("--only", default=",".join(CHECKS), help=f"a subset of {','.join(CHECKS)}")
    p.add_argument("--methods", default=None, help="a subset of the methods (checks 1 and 2)")
    p.add_argument("--compile", action="store_true", help="add a hardware.compile=true variant")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    from gpucheck.sizes import GPU, METHODS, TINY

    only = tuple(c for c in a.only.split(",") if c)
    names = tuple(a.methods.split(",")) if a.methods else METHODS
    bad = [c for c in only if c not in CHECKS] + [m for m in names if m not in METHODS]
    if bad:
        print(f"error: unknown check or method {bad[0]!r} (checks: {', '.join(CHECKS)}; "
              f"methods: {', '.join(METHODS)})", file=sys.stderr)  # fmt: skip
        return 2
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device here (torch "
              f"{torch.__version__}); --device cpu --tiny runs the pack's CPU path",
              file=sys.stderr)  # fmt: skip
        return 2
    hardware = a.hardware or ("auto" if a.device == "cuda" else "cpu")
    return run(a, only, names, hardware, TINY if a.tiny else GPU)


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(a: argparse.Namespace, only: tuple, names: tuple, hardware: str, sizes: object) -> int:
    import torch
    from gpucheck import judge, loader, memory, methods, peer, report
    from gpucheck.common import FAIL, Pack

    from harness.bench.fingerprint import fingerprint
    from harness.bench.hardware import resolve_device
    from harness.bench.runtime import Runtime
    from harness.config.compose import compose_checked
    from harness.core.errors import UserError

    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (out / "pack.log").open("w") as log:
        try:
            _, valid = compose_checked([f"hardware={hardware}"])
            device = resolve_device(valid.top.hardware)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        variants = ("float32", "bf16") + (("compile",) if a.compile else ())
        pack = Pack(a.device, hardware, sizes, out, log, variants)
        rt = Runtime(device, torch.float32, False, False, torch.get_num_threads(), out)
        machine = fingerprint(rt, REPO)
        rows, seconds, cpu, baselines = [], {}, {}, {}
        for check in only:
            t, c = time.perf_counter(), _cpu_s()
            print(f"[{time.perf_counter() - t0:6.1f}s] check {check} ...", flush=True)
            if check == "methods":
                got, baselines = methods.check_methods(pack, names)
            elif check == "agree":
                got = methods.check_agreement(pack, baselines, names)
            else:
                module = {"memory": memory, "judge": judge, "loader": loader, "peer": peer}
                got = getattr(module[check], f"check_{check}")(pack)
            rows += got
            seconds[check] = round(time.perf_counter() - t, 1)
            cpu[check] = round(_cpu_s() - c, 1)
    meta = {
        "device": a.device,
        "hardware": hardware,
        "tiny": a.tiny,
        "command": shlex.join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "wall_s": time.perf_counter() - t0,
        "checks_s": seconds,
        "checks_cpu_s": cpu,  # this process and its children (workers, compares)
    }
    text = report.markdown(rows, machine, meta)
    (out / "gpu_check.md").write_text(text)
    report.write_json(out / "gpu_check.json", rows, machine, meta)
    print(text)
    print(f"written: {out / 'gpu_check.md'}, {out / 'gpu_check.json'} (log: {out / 'pack.log'})")
    return 1 if any(r.status == FAIL for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
