"""CellBender's peak memory against the number of cells: a table and the log-log exponent.

    python benchmarks/cellbender_memory.py [--cells 1000,2000,5000,10000,20000]
        [--droplets 40000] [--epochs 5] [--threads 2] [--ref DIR] [--override KEY=VALUE ...]

Each size is one ``python -m harness method=cellbender`` process (CPU, MLflow off, baselines
off, ``bench.warmup=1 bench.repeats=1``, ``method.epochs`` few) in a fresh directory under
``results/cellbender_memory/`` (its own ``paths.results``). The synthetic droplets hold
``--droplets`` droplets whatever the cells (``dataset.n_droplets``), 3 types of cells/3 cells
each (``dataset.cells_per_type``), 600 genes: the analysed droplets follow the cells (the prior
adds about as many again), the empties stay. ``--ref DIR`` runs a second checkout too (say the
code before a change: ``git archive <commit> | tar -x -C DIR``), as ``PYTHONPATH=DIR``.

Memory is the process's peak RSS from ``wait4`` (the kernel's ``ru_maxrss``), the process
started by a small launcher (as ``benchmarks/peak.py``: a child of a grown process would inherit
its high-water mark). ``before_post_mb`` is the process's own high-water mark (``VmHWM`` in
``/proc/PID/status``) read when the timed run announces its noise-count posterior (the
warm-up's is skipped): the peak of everything before it — data generation, prepare, training;
``post_add_mb`` = peak − before_post: what the posterior, the estimate and the outputs added
on top (0 when they stayed under the earlier peak). The exponent is the slope of a
least-squares line through (log cells, log peak); ``local``: between the two largest sizes.
No times are printed (the machine this was written on is shared; memory is what is measured).

Measured (2 shared CPU cores, 600 genes, 40000 droplets, 5 epochs; ``--ref`` the code before
#23 item 4):

(table: see README, "CellBender", memory)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "cellbender_memory"
COMMON = ["method=cellbender", "hardware=cpu", "tracking.mlflow=false", "bench.baseline=off",
          "bench.warmup=1", "bench.repeats=1", "bench.warmup_steps=2"]  # fmt: skip

LAUNCHER = r"""
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
with open(sys.argv[1] + ".pid", "w") as fh:
    fh.write(str(proc.pid))
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""

POSTERIOR = re.compile(r"^(?!.*warm-up).*noise-count posterior of (\d+) cells x (\d+) genes "
                       r"\((\d+) nonzero")  # fmt: skip


def _hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far (VmHWM), MB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run ``cmd``; exit status, peak RSS (wait4), VmHWM when the posterior starts, its size."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, log.open("w") as fh:
        ru = os.path.join(tmp, "rusage")
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, ru, *cmd], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert proc.stdout is not None
        child: list[int] = []

        def child_pid() -> int | None:
            if not child and os.path.exists(ru + ".pid"):
                text = Path(ru + ".pid").read_text()
                if text:
                    child.append(int(text))
            return child[0] if child else None

        for line in proc.stdout:
            fh.write(line)
            found = POSTERIOR.search(line)
            if found and "before_post_mb" not in out:
                pid = child_pid()
                out["before_post_mb"] = _hwm_mb(pid) if pid else None
                out["cells"], out["genes"], out["nnz"] = (int(g) for g in found.groups())
        proc.wait()
        rc, maxrss_kb = (int(x) for x in Path(ru).read_text().split())
    out.update(rc=rc, peak_mb=maxrss_kb / 1024)
    if out.get("before_post_mb") is not None:
        out["post_add_mb"] = max(out["peak_mb"] - out["before_post_mb"], 0.0)
    return out


def run_one(code: Path, label: str, cells: int, a: argparse.Namespace) -> dict:
    work = OUT / label / f"cells{cells}"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    per_type = max(1, round(cells / 3))
    cmd = [sys.executable, "-m", "harness", *COMMON, f"paths.results={work / 'results'}",
           f"hardware.threads={a.threads}", f"method.epochs={a.epochs}",
           f"dataset.n_droplets={a.droplets}", f"dataset.cells_per_type={per_type}",
           *a.override]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code), "HYDRA_FULL_ERROR": "0"}
    log = work / "run.log"
    r = measure(cmd, work, env, log)
    r.update(label=label, size=3 * per_type, log=str(log.relative_to(REPO)))
    return r


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    if len(xs) < 2:
        return math.nan
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / sxx


def table(rows: list[dict]) -> list[str]:
    lines = ["| code | cells | called | nonzero counts | peak RSS MB | before posterior MB "
             "| posterior adds MB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"| {r['label']} | {r['size']} | failed rc={r['rc']} ({r['log']}) "
                         "| | | | |")  # fmt: skip
            continue
        before = r.get("before_post_mb")
        lines.append(
            f"| {r['label']} | {r['size']:,} | {r.get('cells', 0):,} | {r.get('nnz', 0):,} "
            f"| {r['peak_mb']:.0f} | {before:.0f} | {r.get('post_add_mb', 0):.0f} |"
            if before is not None
            else f"| {r['label']} | {r['size']:,} | - | - | {r['peak_mb']:.0f} | - | - |"
        )
    lines.append("")
    for label in dict.fromkeys(r["label"] for r in rows):
        ok = [r for r in rows if r["label"] == label and r["rc"] == 0]
        xs, ys = [r["size"] for r in ok], [r["peak_mb"] for r in ok]
        lines.append(f"{label}: peak-memory exponent in cells {slope(xs, ys):.2f} "
                     f"(local, two largest: {slope(xs[-2:], ys[-2:]):.2f})")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="1000,2000,5000,10000,20000")
    p.add_argument("--droplets", type=int, default=40000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ref", default="", help="another checkout to measure too (the old code)")
    p.add_argument("--ref-label", default="before")
    p.add_argument("--label", default="after")
    p.add_argument("--override", nargs="*", default=[], help="extra harness overrides")
    a = p.parse_args(argv)
    codes = [(Path(a.ref).resolve(), a.ref_label)] if a.ref else []
    codes.append((REPO, a.label))
    rows = []
    t0 = time.time()
    for cells in (int(c) for c in a.cells.split(",")):
        for code, label in codes:
            r = run_one(code, label, cells, a)
            rows.append(r)
            print(table([r])[2], flush=True)
    rows.sort(key=lambda r: ([c[1] for c in codes].index(r["label"]), r["size"]))
    OUT.mkdir(parents=True, exist_ok=True)
    text = "\n".join(table(rows))
    (OUT / "memory.md").write_text(text + "\n")
    print(text)
    print(f"wrote {OUT / 'memory.md'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
