"""RCTD side by side with rctd-py (the GPL-3.0 peer, run out of process).

    python benchmarks/rctd_peer.py compare --modes full,doublet --sigma shared,estimate
    python benchmarks/rctd_peer.py tables --k-val 100 --sigmas 30,100,150

``compare`` writes one data set (``--dataset synthetic`` with the rctd_synthetic generator, or
``pbmc68k``) as h5ad files, gives rctd-py this project's likelihood tables in its npz format
(``RCTD_Q_MATRICES``: ``Q_<sigma x 100>`` and ``X_vals``, K_val matching; it cannot download its
own offline), then for each mode and sigma setting runs ours and rctd-py, each in its own
subprocess with the same thread count, and prints wall times and their ratio, dominant-type
agreement and max|Δw| of the full-mode weights, spot-class agreement (doublet) and type-set
agreement (multi). ``shared``: both get ``sigma_override`` (``--shared-sigma``, else the sigma
ours estimates); ``estimate``: each estimates its own. Times: ours = the harness's timed run
(prepare, which loads the cached tables, reported apart); rctd-py = ``Reference(...)`` plus
``run_rctd(...)`` with ``compile=False`` (its npz tables are read inside). Medians over
``--repeats`` after ``--warmup`` (ours) / ``--peer-warmup`` (rctd-py) untimed runs.

``tables`` times one likelihood table per sigma: ours (``compute_q_table`` + spline) against
rctd-py's ``compute_q_matrix``, same thread count, and reports max|ΔQ|.

rctd-py is imported only inside the ``_rctd_py*`` subprocesses (``pip install -e .[peers]``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sub(args: list[str], env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"subprocess failed: {' '.join(args[:3])}")


def _threads(n: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# runners (subprocesses)


def run_ours(a: argparse.Namespace) -> None:
    import anndata
    import torch

    from harness.api import RunContext, Runtime
    from methods.rctd.config import RCTDConfig
    from methods.rctd.method import RCTD

    _threads(a.threads)
    work = Path(a.workdir)
    data = {r: anndata.read_h5ad(work / f"{r}.h5ad") for r in ("spatial", "reference")}
    sigma = None if a.sigma == "none" else int(a.sigma)
    cfg = RCTDConfig(
        name="rctd", _target_="methods.rctd.method.RCTD", _schema_="methods.rctd.config.RCTDConfig",
        mode=a.mode, sigma_override=sigma, K_val=a.k_val, batch_size=a.batch_size,
    )  # fmt: skip
    device = torch.device(a.device)
    rt = Runtime(device, torch.float64, False, False, a.threads, Path(a.cache))
    method = RCTD(cfg, rt)
    method.check_inputs(data)
    t0 = time.perf_counter()
    state = method.prepare(data)
    rt.synchronize()
    prepare_s = time.perf_counter() - t0
    times = []
    for i in range(a.warmup + a.repeats):
        t0 = time.perf_counter()
        out = method.run(state, RunContext())
        rt.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    arrays = {k: v.detach().cpu().numpy() for k, v in out.items()}
    arrays["sigma"] = np.round(arrays["sigma"] * 100).astype(np.int64)
    names = np.array(method.type_names, dtype=str)
    np.savez(a.out, times=np.array(times), prepare_s=prepare_s, names=names, **arrays)


def run_rctd_py(a: argparse.Namespace) -> None:
    import anndata
    import torch

    _threads(a.threads)
    import rctd  # GPL-3.0 peer: only ever imported here, in its own process

    work = Path(a.workdir)
    spatial = anndata.read_h5ad(work / "spatial.h5ad")
    reference = anndata.read_h5ad(work / "reference.h5ad")
    sigma = None if a.sigma == "none" else int(a.sigma)
    cutoffs = {k: v for k, v in (("gene_cutoff", a.gene_cutoff),
                                 ("gene_cutoff_reg", a.gene_cutoff_reg)) if v is not None}  # fmt: skip
    cfg = rctd.RCTDConfig(device=a.device, compile=False, K_val=a.k_val, **cutoffs)
    times, log = [], io.StringIO()
    for i in range(a.warmup + a.repeats):
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            t0 = time.perf_counter()
            ref = rctd.Reference(reference, cell_type_col="cell_type")
            res = rctd.run_rctd(spatial, ref, mode=a.mode, config=cfg, sigma_override=sigma)
            if torch.cuda.is_available() and a.device != "cpu":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(elapsed)
    found = re.findall(r"(?:Chosen sigma|sigma override):\s*([0-9.]+)", log.getvalue())
    chosen = round(float(found[-1]) * 100) if found else -1
    arrays = {
        f: np.asarray(getattr(res, f))
        for f in res._fields
        if f not in ("cell_type_names", "first_class_name", "second_class_name")
    }
    names = np.array([str(n) for n in res.cell_type_names], dtype=str)
    np.savez(a.out, times=np.array(times), sigma=np.array([chosen]), names=names, **arrays)


def run_rctd_py_tables(a: argparse.Namespace) -> None:
    _threads(a.threads)
    from rctd._likelihood import compute_q_matrix  # GPL-3.0 peer, own process

    x = np.load(a.x_file)
    out: dict[str, np.ndarray] = {}
    for s in a.sigmas.split(","):
        t0 = time.perf_counter()
        out[f"Q_{s}"] = compute_q_matrix(int(s) / 100.0, x, a.k_val)
        out[f"t_{s}"] = np.array(time.perf_counter() - t0)
    np.savez(a.out, **out)


# --------------------------------------------------------------------------------------------
# driver


def _write_data(a: argparse.Namespace, work: Path) -> None:
    from methods.rctd import data as loaders

    if a.dataset == "pbmc68k":
        d = loaders.pbmc68k(loaders.PBMCConfig(name="pbmc68k", n_pixels=a.n_pixels, seed=a.seed))
    else:
        cfg = loaders.SyntheticConfig(
            name="rctd_synthetic", n_pixels=a.n_pixels, n_genes=a.n_genes, n_types=a.n_types,
            noise_sigma=a.noise_sigma, platform_sd=a.platform_sd, seed=a.seed,
        )  # fmt: skip
        d = loaders.synthetic(cfg)
    work.mkdir(parents=True, exist_ok=True)
    for role, adata in d.items():
        adata.uns.pop("generator", None)
        adata.write_h5ad(work / f"{role}.h5ad")


def _peer_tables(a: argparse.Namespace, work: Path) -> Path:
    from methods.rctd.qtable import SIGMA_GRID, load_or_build_tables, save_rctd_py_npz

    path = work / f"q_matrices_k{a.k_val}.npz"
    if not path.exists():
        tables = [load_or_build_tables(s, a.k_val, Path(a.cache)) for s in SIGMA_GRID]
        save_rctd_py_npz(path, tables)
    return path


def _common(a: argparse.Namespace) -> list[str]:
    return [
        "--workdir", a.workdir, "--k-val", str(a.k_val), "--threads", str(a.threads),
        "--repeats", str(a.repeats), "--warmup", str(a.warmup), "--device", a.device,
        "--cache", a.cache, "--batch-size", str(a.batch_size),
    ]  # fmt: skip


def _in_our_order(ours: dict, peer: dict) -> dict:
    """The peer's outputs with type columns / indices mapped to our cell-type order."""
    names_o, names_p = list(ours["names"]), list(peer["names"])
    if sorted(names_o) != sorted(names_p):
        raise SystemExit(f"cell types differ: ours {names_o}, rctd-py {names_p}")
    perm = np.array([names_p.index(n) for n in names_o])  # our column j = peer column perm[j]
    to_ours = np.argsort(perm)  # peer index -> our index
    out = dict(peer)
    out["weights"] = peer["weights"][:, perm]
    for key in ("first_type", "second_type", "cell_type_indices"):
        if key in peer:
            idx = np.asarray(peer[key]).astype(np.int64)
            out[key] = np.where(idx >= 0, to_ours[np.maximum(idx, 0)], idx)
    return out


def _metrics(mode: str, ours: dict, peer: dict) -> dict[str, float]:
    peer = _in_our_order(ours, peer)
    mask_o, mask_p = ours["pixel_mask"].astype(bool), peer["pixel_mask"].astype(bool)
    both = mask_o & mask_p
    io_, ip = both[mask_o], both[mask_p]

    def rows(d: dict, key: str, sel: np.ndarray) -> np.ndarray:
        return np.asarray(d[key])[sel]

    w_o, w_p = rows(ours, "weights", io_), rows(peer, "weights", ip)
    m = {
        "pixels_ours": float(mask_o.sum()),
        "pixels_peer": float(mask_p.sum()),
        "pixel_mask_agreement": float(np.mean(mask_o == mask_p)),
        "dominant_agreement": float(np.mean(w_o.argmax(1) == w_p.argmax(1))),
        "max_abs_dw": float(np.abs(w_o - w_p).max()),
    }
    if mode == "doublet":
        for key in ("spot_class", "first_type", "second_type"):
            m[f"{key}_agreement"] = float(np.mean(rows(ours, key, io_) == rows(peer, key, ip)))
        wd = np.abs(rows(ours, "weights_doublet", io_) - rows(peer, "weights_doublet", ip))
        m["max_abs_dw_doublet"] = float(wd.max())
    if mode == "multi":
        a, b = rows(ours, "cell_type_indices", io_), rows(peer, "cell_type_indices", ip)
        m["type_set_agreement"] = float(np.mean(np.all(np.sort(a, 1) == np.sort(b, 1), 1)))
        m["n_types_agreement"] = float(
            np.mean(rows(ours, "n_types", io_) == rows(peer, "n_types", ip))
        )
        m["conf_agreement"] = float(
            np.mean(np.all(rows(ours, "conf_list", io_) == rows(peer, "conf_list", ip), 1))
        )
    return m


def compare(a: argparse.Namespace) -> None:
    work = Path(a.workdir)
    print(f"data: {a.dataset} -> {work}", flush=True)
    _write_data(a, work)
    q_file = _peer_tables(a, work)
    shared_sigma = a.shared_sigma
    settings = a.sigma.split(",")
    if "estimate" in settings:  # run it first: its sigma is the shared one by default
        settings = ["estimate"] + [s for s in settings if s != "estimate"]
    rows = []
    for mode in a.modes.split(","):
        for setting in settings:
            sigma = "none" if setting == "estimate" else str(shared_sigma or 100)
            tag = f"{mode}-{setting}"
            print(f"[{tag}] ours ...", flush=True)
            f_o, f_p = work / f"ours_{tag}.npz", work / f"peer_{tag}.npz"
            args = ["--mode", mode, "--sigma", sigma, *_common(a)]
            _sub(["_ours", *args, "--out", str(f_o)])
            print(f"[{tag}] rctd-py ...", flush=True)
            peer_args = [*args, "--warmup", str(a.peer_warmup), "--out", str(f_p)]
            _sub(["_rctd_py", *peer_args], env={"RCTD_Q_MATRICES": str(q_file)})
            ours, peer = dict(np.load(f_o)), dict(np.load(f_p))
            if setting == "estimate" and shared_sigma is None:
                shared_sigma = int(ours["sigma"][0])
            t_o, t_p = float(np.median(ours["times"])), float(np.median(peer["times"]))
            row = {
                "mode": mode, "sigma_setting": setting, "sigma_ours": int(ours["sigma"][0]),
                "sigma_peer": int(peer["sigma"][0]), "ours_s": t_o,
                "ours_prepare_s": float(ours["prepare_s"]), "peer_s": t_p,
                "ratio": t_o / t_p, "ratio_with_prepare": (t_o + float(ours["prepare_s"])) / t_p,
                **_metrics(mode, ours, peer),
            }  # fmt: skip
            rows.append(row)
            print("  " + "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)  # fmt: skip
    (work / "summary.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    cols = ["mode", "sigma_setting", "sigma_ours", "sigma_peer", "ours_s", "peer_s", "ratio",
            "ratio_with_prepare", "dominant_agreement", "max_abs_dw", "spot_class_agreement",
            "type_set_agreement"]  # fmt: skip
    print("\n" + " | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r.get(c, '-'):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                         for c in cols))  # fmt: skip
    print(f"threads={a.threads} device={a.device} K_val={a.k_val} rctd-py compile=False; "
          f"repeats={a.repeats} warmup ours={a.warmup} rctd-py={a.peer_warmup}")  # fmt: skip


def tables(a: argparse.Namespace) -> None:
    import torch

    from methods.rctd.likelihood import build_x_vals, spline_second_derivatives
    from methods.rctd.qtable import compute_q_table

    _threads(a.threads)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    x = build_x_vals()
    np.save(work / "x_vals.npy", x)
    out = work / "peer_tables.npz"
    print("rctd-py compute_q_matrix ...", flush=True)
    _sub(["_rctd_py_tables", "--x-file", str(work / "x_vals.npy"), "--sigmas", a.sigmas,
          "--k-val", str(a.k_val), "--threads", str(a.threads), "--out", str(out)])  # fmt: skip
    peer = np.load(out)
    compute_q_table(1.0, x, 10, device=a.device)  # warm the kernels
    print(f"K_val={a.k_val} threads={a.threads} device={a.device}")
    print("sigma | ours_q_s | ours_q+spline_s | rctd_py_s | speedup | max|dQ|")
    for s in a.sigmas.split(","):
        t0 = time.perf_counter()
        q = compute_q_table(int(s) / 100.0, x, a.k_val, device=a.device)
        if a.device != "cpu":
            torch.cuda.synchronize()
        t_q = time.perf_counter() - t0
        spline_second_derivatives(q, x)
        t_all = time.perf_counter() - t0
        t_p = float(peer[f"t_{s}"])
        dq = float(np.abs(q - peer[f"Q_{s}"]).max())
        print(f"{s} | {t_q:.3f} | {t_all:.3f} | {t_p:.3f} | {t_p / t_all:.1f}x | {dq:.2e}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="ours vs rctd-py on one data set")
    c.add_argument("--dataset", choices=["synthetic", "pbmc68k"], default="synthetic")
    c.add_argument("--n-pixels", type=int, default=10000)
    c.add_argument("--n-genes", type=int, default=1000)
    c.add_argument("--n-types", type=int, default=12)
    c.add_argument("--noise-sigma", type=float, default=0.3)
    c.add_argument("--platform-sd", type=float, default=0.3)
    c.add_argument("--seed", type=int, default=2025)
    c.add_argument("--modes", default="full,doublet")
    c.add_argument("--sigma", default="estimate,shared", help="estimate and/or shared")
    c.add_argument("--shared-sigma", type=int, default=None, help="default: ours' estimate")
    c.add_argument("--peer-warmup", type=int, default=0, help="rctd-py runs before timing")
    t = sub.add_parser("tables", help="likelihood table build time, ours vs rctd-py")
    t.add_argument("--sigmas", default="30,100,150")
    runners = [sub.add_parser(name) for name in ("_ours", "_rctd_py")]
    for r in runners:
        r.add_argument("--mode", required=True)
        r.add_argument("--sigma", required=True)
        r.add_argument("--out", required=True)
        r.add_argument("--gene-cutoff", type=float, default=None, help="default: RCTD's")
        r.add_argument("--gene-cutoff-reg", type=float, default=None, help="default: RCTD's")
    for q in (c, t, *runners):
        q.add_argument("--k-val", type=int, default=100)
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--device", default="cpu")
        q.add_argument("--workdir", default="results/peer")
        q.add_argument("--cache", default="results/cache")
    for q in (c, *runners):
        q.add_argument("--repeats", type=int, default=1)
        q.add_argument("--warmup", type=int, default=1)
        q.add_argument("--batch-size", type=int, default=10000)
    pt = sub.add_parser("_rctd_py_tables")
    for flag in ("--x-file", "--sigmas", "--out"):
        pt.add_argument(flag, required=True)
    pt.add_argument("--k-val", type=int, default=100)
    pt.add_argument("--threads", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    commands = {
        "compare": compare, "tables": tables, "_ours": run_ours, "_rctd_py": run_rctd_py,
        "_rctd_py_tables": run_rctd_py_tables,
    }  # fmt: skip
    commands[a.cmd](a)


if __name__ == "__main__":
    main()
