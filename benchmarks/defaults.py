"""Each method's default run, as a newcomer types it, quiet and beside a busy job.

    python benchmarks/defaults.py                      # every method, quiet
    python benchmarks/defaults.py --busy 2             # ... and beside 2 spinning processes
    python benchmarks/defaults.py --methods scvi,rctd --extra hardware.threads=1

Each run is ``python -m harness method=M`` as a newcomer types it (its embedded synthetic
dataset, this machine's default hardware profile, MLflow on: the default sqlite store) in a
fresh results directory, with no baseline; the table gives the whole process's wall time
(start-up, data, prepare, warm-up, the timed runs, logging) and the harness's ``elapsed_s``,
and the status of its MLflow run read back from the store (``FINISHED`` expected);
``--no-mlflow`` turns tracking off. ``--busy N`` repeats every run beside N processes that spin
on the CPU for as long as it lasts (a busy neighbour: another job, a build, a second run) and
prints the slowdown. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("rctd", "scvi", "cellbender", "scbert", "cellwhisperer")
SPIN = "while True:\n    pass\n"


def mlflow_status(db: Path) -> str:
    """The status of the runs in an MLflow sqlite store ("-" when there is none)."""
    if not db.exists():
        return "-"
    with sqlite3.connect(db) as con:
        return ",".join(status for (status,) in con.execute("SELECT status FROM runs")) or "-"


def run_default(method: str, extra: list[str], timeout_s: float) -> tuple[float, float, int, str]:
    """(wall s, elapsed_s, exit code, MLflow run status) of one default run in a fresh
    results directory."""
    with tempfile.TemporaryDirectory(prefix=f"defaults-{method}-") as tmp:
        cmd = [sys.executable, "-m", "harness", f"method={method}",
               "bench.baseline=off", f"paths.results={tmp}/results", *extra]  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            return float("inf"), float("nan"), 124, "-"
        wall = time.perf_counter() - t0
        table = Path(tmp) / "results" / "results.tsv"
        rows = list(csv.DictReader(table.open(), delimiter="\t")) if table.exists() else []
        elapsed = float(rows[-1]["elapsed_s"] or "nan") if rows else float("nan")
        status = mlflow_status(Path(tmp) / "results" / "mlflow.db")
    return wall, elapsed, code, status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--busy", type=int, default=0, help="spinning processes beside each run")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--no-mlflow", action="store_true", help="tracking.mlflow=false")
    a = ap.parse_args()
    extra = [*a.extra, *(["tracking.mlflow=false"] if a.no_mlflow else [])]
    print(f"{'method':14} {'wall s':>8} {'elapsed_s':>9} {'mlflow':>9}" + (
        f" {'busy wall':>9} {'busy/quiet':>10}" if a.busy else ""))  # fmt: skip
    failed = 0
    for method in a.methods.split(","):
        wall, elapsed, code, status = run_default(method, extra, a.timeout)
        line = f"{method:14} {wall:8.1f} {elapsed:9.2f} {status:>9}"
        if a.busy:
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(a.busy)]
            try:
                busy, _, code_b, _ = run_default(method, extra, a.timeout)
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
            line += f" {busy:9.1f} {busy / wall:9.2f}x"
            code = code or code_b
        print(line + ("" if code == 0 else f"  (exit {code})"), flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
