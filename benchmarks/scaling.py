"""How each method's time and peak memory grow with its input: a scaling table and a log-log plot.

    python benchmarks/scaling.py                          # every method, 3-4 sizes each
    python benchmarks/scaling.py --methods rctd --large --append   # + RCTD to 150k x 18k genes
    python benchmarks/scaling.py --methods rctd,scvi --peer /work/peers/bin/python

Each size is one ``python -m harness`` process (CPU, ``bench.warmup=1 bench.repeats=1``,
MLflow off, baselines off) in ``results/scaling/work`` (RCTD's likelihood tables are cached
there once). Time is the harness's ``elapsed_s`` (the timed run, or the one timed training);
``wall_s`` is the whole process (data generation and prepare included). Memory is the process's
peak RSS from ``wait4`` (the kernel's ``ru_maxrss``), started by a small launcher process
(``benchmarks/peak.py``: a child forked from this grown process would inherit its high-water
mark). The exponent is the slope of a
least-squares line through (log size, log value); ``local`` is the slope between the two largest
sizes, where the fixed cost (Python, torch, ~0.5 GB) weighs least.

The natural size axes: RCTD pixels (Visium-HD-like sparse spatial counts: 18k genes, nUMI
100..1000, ~3 % dense, 12 types, sigma fixed, full mode; gene cut-offs 2.5e-4 / 3.5e-4 give
~5.7k bulk and ~1.9k regression genes, as in issue 17's case — the defaults select 9.2k),
scVI cells (2000 genes, one epoch), CellBender cells per type (one epoch; the analysed
droplets follow the cells), scBERT cells per type (one epoch per stage), CellWhisperer cells
(one epoch). ``--peer PYTHON``: the peer (rctd-py, scvi-tools) at the same sizes, in that
interpreter's process (a venv with ``pip install -e .[peers]``), same thread count.

Writes ``results/scaling/scaling.tsv`` (one row per method x size x side) and
``results/scaling/scaling.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "scaling"
COMMON = ["hardware=cpu", "tracking.mlflow=false", "bench.baseline=off", "bench.warmup=1",
          "bench.repeats=1", "bench.warmup_steps=2"]  # fmt: skip


@dataclass
class Case:
    axis: str  # the dataset key that sets the size
    sizes: list[int]
    large: list[int]
    fixed: list[str] = field(default_factory=list)


CASES = {
    "rctd": Case("dataset.n_pixels", [2500, 5000, 10000, 20000], [50000, 100000, 150000],
                 ["method=rctd", "dataset=spatial/synthetic", "dataset.sparse=true",
                  "dataset.n_genes=18000", "dataset.umi_min=100", "dataset.umi_max=1000",
                  "method.sigma_override=100", "method.mode=full", "method.K_val=100",
                  "method.gene_cutoff=2.5e-4", "method.gene_cutoff_reg=3.5e-4"]),
    "scvi": Case("dataset.n_cells", [20000, 60000, 200000], [600000],
                 ["method=scvi", "dataset=cells/synthetic", "dataset.n_genes=2000",
                  "method.max_epochs=1"]),
    # the analysed droplets follow the cells (the prior), not the empties: cells grow, the raw
    # matrix holds 40k droplets (3 types x cells_per_type cells, the rest empty)
    "cellbender": Case("dataset.cells_per_type", [300, 1000, 3000], [10000],
                       ["method=cellbender", "method.epochs=1", "dataset.n_droplets=40000"]),
    "scbert": Case("dataset.cells_per_type", [100, 300, 1000], [3000],
                   ["method=scbert", "method.epochs_a=1", "method.epochs_b=1",
                    "method.prune_target=0.1"]),
    "cellwhisperer": Case("dataset.n_cells", [1000, 3000, 10000], [30000],
                          ["method=cellwhisperer", "method.epochs=1"]),
}  # fmt: skip


def _measured(
    cmd: list[str], cwd: Path, env: dict[str, str], log: Path
) -> tuple[int, float, float]:
    """Run ``cmd``; (exit status, wall s, peak RSS MB) of that process (benchmarks/peak.py)."""
    from peak import measured

    return measured(cmd, cwd, env, log)


def ours(method: str, size: int, threads: int) -> dict[str, float | str]:
    case = CASES[method]
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "harness", *case.fixed, *COMMON, f"hardware.threads={threads}",
           f"{case.axis}={size}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    log = OUT / f"{method}-{size}-ours.log"
    rc, wall, rss = _measured(cmd, work, env, log)
    text = log.read_text()
    found = re.search(r"^\s+elapsed_s\s+: ([0-9.e+-]+)", text, re.M)
    if rc != 0 or not found:
        return {"status": f"failed rc={rc} (see {log.relative_to(REPO)})", "wall_s": wall,
                "peak_rss_mb": rss}  # fmt: skip
    return {"status": "ok", "time_s": float(found.group(1)), "wall_s": wall, "peak_rss_mb": rss}


# ---- peers (each in its own process of the peer's interpreter) ------------------------------
def _peer_data(method: str, size: int, work: Path) -> dict[str, str]:
    """Write the same data the harness generates as h5ad files for the peer."""
    sys.path.insert(0, str(REPO))
    from harness.config.compose import compose_checked
    from harness.config.validate import locate

    case = CASES[method]
    _, valid = compose_checked([*case.fixed, *COMMON, f"{case.axis}={size}"])
    data = locate(valid.dataset._target_, "dataset._target_")(valid.dataset)
    paths = {}
    for role, adata in data.items():
        adata.uns.pop("generator", None)
        paths[role] = str(work / f"{role}.h5ad")
        adata.write_h5ad(paths[role])
    return paths


def peer(method: str, size: int, threads: int, python: str) -> dict[str, float | str] | None:
    if method not in ("rctd", "scvi"):
        return None
    work = OUT / "work" / f"peer-{method}-{size}"
    work.mkdir(parents=True, exist_ok=True)
    _peer_data(method, size, work)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    if method == "rctd":
        from methods.rctd.qtable import SIGMA_GRID, load_or_build_tables, save_rctd_py_npz

        tables = work.parent / "q_matrices_k100.npz"
        if not tables.exists():
            cache = OUT / "work" / "results" / "cache"
            save_rctd_py_npz(tables, [load_or_build_tables(s, 100, cache) for s in SIGMA_GRID])
        env["RCTD_Q_MATRICES"] = str(tables)
        cmd = [python, str(REPO / "benchmarks" / "rctd_peer.py"), "_rctd_py", "--mode", "full",
               "--sigma", "100", "--out", str(work / "peer.npz"), "--workdir", str(work),
               "--k-val", "100", "--threads", str(threads), "--warmup", "0", "--repeats", "1",
               "--gene-cutoff", "2.5e-4", "--gene-cutoff-reg", "3.5e-4"]  # fmt: skip
    else:
        cmd = [python, str(Path(__file__).resolve()), "_scvi_tools", str(work / "cells.h5ad"),
               str(threads)]  # fmt: skip
    log = OUT / f"{method}-{size}-peer.log"
    rc, wall, rss = _measured(cmd, REPO, env, log)
    if rc != 0:
        return {"status": f"failed rc={rc} (see {log.relative_to(REPO)})", "wall_s": wall,
                "peak_rss_mb": rss}  # fmt: skip
    if method == "rctd":
        elapsed = float(np.load(work / "peer.npz")["times"][0])
    else:
        elapsed = float(re.findall(r"train_s=([0-9.]+)", log.read_text())[-1])
    return {"status": "ok", "time_s": elapsed, "wall_s": wall, "peak_rss_mb": rss}


def _scvi_tools(path: str, threads: str) -> None:
    """scvi-tools, one epoch on the file (own process; the timed part is ``train``)."""
    import anndata
    import torch

    torch.set_num_threads(int(threads))
    import scvi

    adata = anndata.read_h5ad(path)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata)
    t0 = time.perf_counter()
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    print(f"train_s={time.perf_counter() - t0:.3f}")


# ---- table and plot --------------------------------------------------------------------------
def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def summarise(rows: list[dict]) -> list[str]:
    lines = [f"{'method':14} {'side':5} {'size':>8} {'time_s':>9} {'wall_s':>8} {'rss_MB':>8}"]
    for r in rows:
        t = f"{r['time_s']:.3f}" if "time_s" in r else "-"
        lines.append(f"{r['method']:14} {r['side']:5} {r['size']:>8} {t:>9} "
                     f"{r['wall_s']:>8.1f} {r['peak_rss_mb']:>8.0f}  {r['status']}")  # fmt: skip
    lines.append("")
    lines.append(
        f"{'method':14} {'side':5} {'time exp':>9} {'local':>6} {'mem exp':>8} {'local':>6}"
    )
    for (method, side), group in _groups(rows).items():
        xs = [r["size"] for r in group]
        ts = [r["time_s"] for r in group]
        ms = [r["peak_rss_mb"] for r in group]
        lines.append(f"{method:14} {side:5} {slope(xs, ts):>9.2f} {slope(xs[-2:], ts[-2:]):>6.2f} "
                     f"{slope(xs, ms):>8.2f} {slope(xs[-2:], ms[-2:]):>6.2f}")  # fmt: skip
    return lines


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            out.setdefault((r["method"], r["side"]), []).append(r)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(rows)
    methods = sorted({m for m, _ in groups})
    fig, axes = plt.subplots(2, len(methods), figsize=(3.6 * len(methods), 6.5), squeeze=False)
    for j, method in enumerate(methods):
        for side, style in (("ours", "o-"), ("peer", "s--")):
            group = groups.get((method, side))
            if not group:
                continue
            xs = [r["size"] for r in group]
            for i, (key, label) in enumerate(
                (("time_s", "time (s)"), ("peak_rss_mb", "peak RSS (MB)"))
            ):
                ys = [r[key] for r in group]
                ax = axes[i][j]
                ax.loglog(xs, ys, style, label=f"{side} (exp {slope(xs, ys):.2f})")
                ax.set_ylabel(label)
                ax.legend(fontsize=8)
        axes[0][j].set_title(method)
        axes[1][j].set_xlabel(CASES[method].axis.split(".")[-1])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_tsv(rows: list[dict], path: Path) -> None:
    keys = ["method", "side", "size", "time_s", "wall_s", "peak_rss_mb", "status"]
    lines = ["\t".join(keys)] + ["\t".join(str(r.get(k, "")) for k in keys) for r in rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def read_tsv(path: Path) -> list[dict]:
    """Rows of an earlier run (``--append``)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    keys = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        r = dict(zip(keys, line.split("\t"), strict=True))
        r["size"] = int(r["size"])
        for k in ("time_s", "wall_s", "peak_rss_mb"):
            if r.get(k):
                r[k] = float(r[k])
            else:
                r.pop(k, None)
        rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_scvi_tools"]:
        return _scvi_tools(*argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(CASES))
    p.add_argument("--large", action="store_true", help="add the biggest sizes")
    p.add_argument("--sizes", default="", help="comma list replacing the sizes (one method)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer", default="", help="the peer's python (a venv with .[peers])")
    p.add_argument("--append", action="store_true",
                   help="add to (or replace rows of) the existing scaling.tsv")  # fmt: skip
    a = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = read_tsv(OUT / "scaling.tsv") if a.append else []
    for method in a.methods.split(","):
        case = CASES[method]
        sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else case.sizes
        sizes += case.large if a.large and not a.sizes else []
        for size in sizes:
            sides = [("ours", ours(method, size, a.threads))]
            if a.peer:
                sides.append(("peer", peer(method, size, a.threads, a.peer)))
            for side, r in sides:
                if r is None:
                    continue
                rows = [
                    o for o in rows if (o["method"], o["side"], o["size"]) != (method, side, size)
                ]
                rows.append({"method": method, "side": side, "size": size, **r})
                print(summarise(rows[-1:])[1], flush=True)
            write_tsv(rows, OUT / "scaling.tsv")
    rows.sort(key=lambda r: (list(CASES).index(r["method"]), r["side"], r["size"]))
    write_tsv(rows, OUT / "scaling.tsv")
    print("\n".join(summarise(rows)))
    plot(rows, OUT / "scaling.png")
    print(f"wrote {OUT / 'scaling.tsv'} and {OUT / 'scaling.png'}")


if __name__ == "__main__":
    main()
