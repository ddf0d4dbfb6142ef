"""Check 6: RCTD against rctd-py on the same device, through ``benchmarks/rctd_peer.py
compare`` (each side in its own process, the same h5ad files and likelihood tables): time
ratio and agreement. Skipped, with the reason, where rctd-py is not installed
(``pip install -e ".[peers]"``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from gpucheck.common import OK, REPO, SKIP, WARN, Pack, Row, guarded


def check_peer(pack: Pack) -> list[Row]:
    """Check 6 (module doc)."""
    rows: list[Row] = []
    row = Row("peer", "rctd", "vs rctd-py", pack.device)
    if importlib.util.find_spec("rctd") is None:
        row.status = SKIP
        row.note = 'rctd-py is not installed here (pip install -e ".[peers]")'
        rows.append(row)
        return rows

    def peer(row: Row) -> None:
        work = pack.out / "peer"
        args = [sys.executable, str(REPO / "benchmarks" / "rctd_peer.py"), "compare",
                "--device", pack.device, "--workdir", str(work),
                "--cache", str(pack.work / "cache"), *pack.sizes.peer]  # fmt: skip
        print(f"--- {' '.join(args[1:])}", file=pack.log, flush=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
        (pack.out / "peer.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"rctd_peer.py exited {proc.returncode} (see peer.log)")
        summary = json.loads((work / "summary.json").read_text())["rows"][0]
        keys = ("mode", "ours_s", "peer_s", "ratio", "dominant_agreement", "max_abs_dw")
        row.figures.update({k: summary.get(k) for k in keys})
        row.detail = summary
        agree = summary.get("dominant_agreement", 0.0) >= 0.99
        row.status = OK if agree else WARN
        row.note = "ratio = ours / rctd-py" + ("" if agree else "; dominant types disagree")

    guarded(pack, rows, row, peer)
    return rows
