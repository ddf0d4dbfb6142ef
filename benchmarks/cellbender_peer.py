"""CellBender side by side: ours vs cellbender 0.4.0 (out of process) on the same raw matrix.

    python benchmarks/cellbender_peer.py [--case all|NAME ...] [--epochs 20] [--threads 1]
        [--peer-python /work/venvs/cellbender/bin/python] [--workdir DIR] [--reuse-peer]
        [--override method.posterior_rate=full ...]
    python benchmarks/cellbender_peer.py --data synthetic|pbmc68k [--droplets 6000 ...]

``--data simulate`` (default) draws each case of ``CASES`` with cellbender's own simulator
(``generate_sample_dirichlet_dataset``, full model, the case's seed; needs cellbender installed,
here or in the venv given by ``--peer-python``); ``synthetic`` / ``pbmc68k`` use this project's
generators (one case). Both tools get the same file, epochs, learning rate, expected cells,
analysed droplets and thread count; cellbender is only ever run as a command. Prints one table
per case (s/epoch, training, posterior and estimation time, wall time, the quality against the
same truth: cell F1, ambient correlation, background removed, signal kept, per-gene
over-removal), then a summary: ours minus cellbender on every quality figure and the ratio of
train + posterior + estimate times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]

PEER_SIMULATE = r"""
import sys, json, numpy as np, scipy.sparse as sp, anndata, pandas as pd
from cellbender.remove_background.data.extras.simulate import generate_sample_dirichlet_dataset
kw, out = json.loads(sys.argv[1]), sys.argv[2]
d = generate_sample_dirichlet_dataset(model_type="full", **kw)
true = sp.csr_matrix(d["counts_true"]); bkg = sp.csr_matrix(d["counts_bkg"])
labels = np.asarray(d["droplet_labels"])
obs = pd.DataFrame({"cell": labels > 0, "cell_type": labels.astype(str)},
                   index=[f"BC{i:07d}" for i in range(true.shape[0])])
a = anndata.AnnData(X=sp.csr_matrix(true + bkg, dtype=np.float32), obs=obs,
                    var=pd.DataFrame(index=[f"g{i}" for i in range(true.shape[1])]))
a.layers["counts_true"] = sp.csr_matrix(true, dtype=np.float32)
a.layers["counts_bkg"] = sp.csr_matrix(bkg, dtype=np.float32)
a.uns["chi_ambient"] = np.asarray(d["chi_ambient"], dtype=np.float64)
a.write_h5ad(out)
"""

# simulator cases: (generate_sample_dirichlet_dataset arguments, --total-droplets-included)
CASES: dict[str, tuple[dict, int]] = {
    "equal3": (dict(n_genes=1000, cells_of_each_type=[234, 233, 233], n_droplets=6000,
                    cell_mean_umi=[5000], empty_mean_umi=200, random_seed=0), 3000),
    "unequal4": (dict(n_genes=1200, cells_of_each_type=[350, 200, 100, 50], n_droplets=6000,
                      cell_mean_umi=[5000, 2500, 8000, 1500], empty_mean_umi=200,
                      random_seed=7), 3000),
    "lowdepth_ambient": (dict(n_genes=1000, cells_of_each_type=[300, 250, 150], n_droplets=6000,
                              cell_mean_umi=[1200, 1000, 1500], empty_mean_umi=300,
                              rho_alpha=6, rho_beta=60, random_seed=3), 2500),
    "droplets20k": (dict(n_genes=800, cells_of_each_type=[400, 300, 200], n_droplets=20000,
                         cell_mean_umi=[4000, 3000, 6000], empty_mean_umi=150,
                         random_seed=11), 3000),
}  # fmt: skip

PEER_READ = r"""
import sys, numpy as np, scipy.sparse as sp
from cellbender.remove_background.downstream import anndata_from_h5
a = anndata_from_h5(sys.argv[1])
np.savez(sys.argv[2], data=sp.csr_matrix(a.X).data, indices=sp.csr_matrix(a.X).indices,
         indptr=sp.csr_matrix(a.X).indptr, shape=np.array(a.X.shape),
         barcodes=np.asarray(a.obs_names).astype(str),
         p=np.asarray(a.obs.get("cell_probability", np.ones(a.n_obs))),
         ambient=np.asarray(a.var.get("ambient_expression", np.zeros(a.n_vars))))
"""


def make_data(args: argparse.Namespace, path: Path, case: str | None) -> None:
    if case is not None:
        if path.exists():
            return
        cmd = [args.peer_python, "-c", PEER_SIMULATE, json.dumps(CASES[case][0]), str(path)]
        if subprocess.run(cmd, check=False).returncode:
            raise SystemExit("cellbender's simulator failed (is cellbender installed?)")
        return
    from harness.api import prepared  # noqa: F401 - ensures the harness imports

    if args.data == "synthetic":
        from methods.cellbender.data import SyntheticConfig, synthetic

        cfg = SyntheticConfig(name="droplets/synthetic", _target_="x", _schema_="x",
                              n_genes=args.genes, cells_per_type=args.cells // 3,
                              n_droplets=args.droplets, seed=args.seed)  # fmt: skip
        adata = synthetic(cfg)["droplets"]
    else:
        from methods.cellbender.data import PBMCConfig, pbmc68k

        adata = pbmc68k(PBMCConfig(name="droplets/pbmc68k", _target_="x", _schema_="x"))["droplets"]
    adata.uns.pop("truth", None)
    adata.uns.pop("generator", None)
    adata.write_h5ad(path)


def quality(adata, denoised: sp.csr_matrix, p: np.ndarray, ambient: np.ndarray) -> dict:
    from methods.cellbender.check import quality as q

    return q({"denoised": denoised, "cell_probability": p, "ambient": ambient}, adata)


def run_ours(
    args: argparse.Namespace, raw: Path, work: Path, n_cells: int, total: int,
    extra: tuple[str, ...] = (),
) -> dict:  # fmt: skip
    out = work / "ours.h5ad"
    cmd = [sys.executable, "-m", "harness", "method=cellbender", "dataset=droplets/file",
           f"dataset.path={raw}", f"method.epochs={args.epochs}", f"method.lr={args.lr}",
           f"method.expected_cells={n_cells}", f"method.total_droplets_included={total}",
           "hardware=cpu", f"hardware.threads={args.threads}", "tracking.mlflow=false",
           "bench.baseline=off", f"run.output={out}", f"paths.results={work / 'results'}",
           *args.override, *extra]  # fmt: skip
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's harness, from any cwd
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"ours failed:\n{proc.stderr[-2000:]}")
    m = {
        k: float(v)
        for k, v in re.findall(r"^\s+(\w+)\s+: ([-+]?\d[\d.eE+-]*)\s*$", proc.stdout, re.M)
    }
    import anndata

    a = anndata.read_h5ad(out)
    return {
        "s_per_epoch": m["train_s"] / args.epochs,
        "train_s": m["train_s"],
        "posterior_s": m["posterior_s"],
        "estimate_s": m["estimate_s"],
        "total_s": m["train_s"] + m["posterior_s"] + m["estimate_s"],
        "wall_s": wall,
        "checkpoint_s": m.get("checkpoint_s", 0.0),
        "denoised": sp.csr_matrix(a.X),
        "p": a.obs["cell_probability"].to_numpy(),
        "ambient": a.var["ambient_expression"].to_numpy(),
    }


def run_cellbender(
    args: argparse.Namespace, raw: Path, work: Path, n_cells: int, total: int, adata: Any
) -> dict:
    out = work / "cellbender" / "out.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    cli = Path(args.peer_python).with_name("cellbender")
    cmd = [str(cli), "remove-background", "--input", str(raw), "--output", str(out),
           "--expected-cells", str(n_cells), "--total-droplets-included", str(total),
           "--epochs", str(args.epochs), "--learning-rate", str(args.lr),
           "--cpu-threads", str(args.threads)]  # fmt: skip
    wall_file = out.parent / "wall_s.txt"
    if not (args.reuse_peer and wall_file.exists() and out.exists()):
        t0 = time.perf_counter()
        log = (work / "cellbender" / "stdout.log").open("w")
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out.parent)
        wall_file.write_text(str(time.perf_counter() - t0))
        if proc.returncode:
            raise SystemExit(f"cellbender failed (see {log.name})")
    wall = float(wall_file.read_text())
    text = (out.parent / "out.log").read_text() if (out.parent / "out.log").exists() else ""
    phases = _phases(text)
    npz = work / "cellbender" / "read.npz"
    subprocess.run([args.peer_python, "-c", PEER_READ, str(out), str(npz)], check=True)
    z = np.load(npz, allow_pickle=False)
    m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    index = {b: i for i, b in enumerate(adata.obs_names)}
    rows = np.array([index[b] for b in z["barcodes"]])
    coo = m.tocoo()
    denoised = sp.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=adata.shape)
    p = np.zeros(adata.n_obs)
    p[rows] = z["p"]
    return {**phases, "wall_s": wall, "denoised": denoised, "p": p, "ambient": z["ambient"]}


def _phases(log: str) -> dict:
    """Phase seconds from cellbender 0.4.0's log: it stamps the time (1 s resolution) at the
    start, after inference, after the posterior and at the end; the training phase includes
    data loading (~1 s here) and the estimate phase includes the report it writes."""
    stamps: list[tuple[float, str]] = []
    previous = ""
    for line in log.splitlines():
        m = re.match(r"cellbender:remove-background: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*$", line)
        if m:
            stamps.append((time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")), previous))
        elif line.strip():
            previous = line

    def after(pattern: str) -> float | None:
        return next((t for t, msg in stamps if re.search(pattern, msg)), None)

    t0, t_train, t_post = (
        (stamps[0][0] if stamps else None),
        after("checkpoint"),
        after("posterior"),
    )
    t_end = stamps[-1][0] if stamps else None
    per_epoch = [float(x) for x in re.findall(r"\(([\d.]+) seconds per epoch\)", log)]
    out: dict = {}
    if t0 and t_train:
        out["train_s"] = t_train - t0
    if per_epoch:
        out["s_per_epoch"] = sum(per_epoch) / len(per_epoch)
    if t_train and t_post:
        out["posterior_s"] = t_post - t_train
    if t_post and t_end:
        out["estimate_s"] = t_end - t_post
    return out


QKEYS = ("cell_f1", "ambient_corr", "background_removed", "signal_kept", "over_removal")
TKEYS = ("s_per_epoch", "train_s", "posterior_s", "estimate_s", "wall_s")


def run_case(args: argparse.Namespace, case: str | None, work: Path) -> dict:
    """Both tools on one raw file; prints the case's table, returns its rows."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"raw-{case or args.data}.h5ad"
    make_data(args, raw, case)
    import anndata

    adata = anndata.read_h5ad(raw)
    n_cells = int(adata.obs["cell"].sum())
    total = CASES[case][1] if case else args.total
    results = {"ours": run_ours(args, raw, work, n_cells, total)}
    if args.checkpoint:
        every = ("checkpoint.enabled=true", f"checkpoint.every_epochs={args.checkpoint}")
        results["ours+checkpoints"] = run_ours(args, raw, work, n_cells, total, every)
    if not args.skip_peer:
        results["cellbender 0.4.0"] = run_cellbender(args, raw, work, n_cells, total, adata)
    print(f"\n{case or args.data}: {adata.n_obs} droplets, {n_cells} cells, {adata.n_vars} genes; "
          f"{total} analysed, {args.epochs} epochs, {args.threads} thread(s)")  # fmt: skip
    print(f"{'tool':18}" + "".join(f"{k:>{max(14, len(k) + 2)}}" for k in TKEYS + QKEYS))
    rows = {}
    for name, r in results.items():
        if "train_s" in r and "s_per_epoch" not in r:
            r["s_per_epoch"] = r["train_s"] / args.epochs
        q = quality(adata, r["denoised"], r["p"], r["ambient"])
        rows[name] = {**{k: r.get(k) for k in TKEYS}, **{k: q.get(k) for k in QKEYS}}
        rows[name]["total_s"] = sum(r.get(k) or 0.0 for k in TKEYS[1:4])
        print(f"{name:18}" + "".join(
            f"{v:{max(14, len(k) + 2)}.4g}" if v is not None else f"{'-':>{max(14, len(k) + 2)}}"
            for k, v in rows[name].items() if k != "total_s"
        ))  # fmt: skip
    if args.checkpoint:
        c = results["ours+checkpoints"]
        print(f"checkpoints every {args.checkpoint} epoch(s): {c['checkpoint_s']:.3f} s in the "
              f"trainer's thread = {c['checkpoint_s'] / c['train_s']:.2%} of training; train_s "
              f"{c['train_s']:.2f} vs {results['ours']['train_s']:.2f} without")  # fmt: skip
    return rows


def summary(table: dict[str, dict]) -> None:
    """Ours minus cellbender on every quality figure, and the time ratio, per case."""
    peer = "cellbender 0.4.0"
    cases = [c for c, rows in table.items() if peer in rows]
    if not cases:
        return
    print(f"\nsummary: ours - cellbender ({'time: (train + posterior + estimate) ours / theirs'})")
    print(f"{'case':18}" + "".join(f"{k:>20}" for k in QKEYS) + f"{'time ratio':>12}")
    for c in cases:
        o, p = table[c]["ours"], table[c][peer]
        diffs = "".join(f"{o[k] - p[k]:+20.4f}" for k in QKEYS)
        print(f"{c:18}{diffs}{o['total_s'] / max(p['total_s'], 1e-9):12.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", choices=["simulate", "synthetic", "pbmc68k"], default="simulate")
    ap.add_argument("--case", nargs="+", default=["all"], choices=["all", *CASES])
    ap.add_argument("--droplets", type=int, default=6000)
    ap.add_argument("--cells", type=int, default=700)
    ap.add_argument("--genes", type=int, default=1200)
    ap.add_argument("--total", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-python", default=sys.executable)
    ap.add_argument("--workdir", type=Path, default=Path("results/peer/cellbender"))
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--reuse-peer", action="store_true",
                    help="reuse cellbender's output of an earlier run in the same workdir")  # fmt: skip
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for ours, e.g. method.posterior_rate=full (repeatable)")  # fmt: skip
    ap.add_argument("--checkpoint", type=int, default=0, metavar="EPOCHS",
                    help="also ours with a checkpoint every EPOCHS epochs: the overhead")  # fmt: skip
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    work = args.workdir.resolve()
    if args.data != "simulate":
        cases: list[str | None] = [None]
    else:
        cases = list(CASES) if "all" in args.case else list(args.case)
    table = {}
    for case in cases:
        sub = work / f"e{args.epochs}" / (case or args.data)
        table[case or args.data] = run_case(args, case, sub)
    summary(table)
    (work / f"summary-e{args.epochs}.json").write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
