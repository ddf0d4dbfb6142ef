"""scVI at census size: a synthetic census-like file on disk, streamed with bounded host memory.

    python benchmarks/scvi_stream.py generate --cells 1000000 --genes 8000 --out data/census_1m.h5ad
    python benchmarks/scvi_stream.py measure data/census_200k.h5ad data/census_1m.h5ad
    python benchmarks/scvi_stream.py measure ... --peer /work/peers/bin/python

``generate`` writes a sparse CSR h5ad (anndata's on-disk format, written block by block with
h5py: memory bounded by one 4096-cell block whatever the size) from the synthetic scVI recipe
(methods/scvi/data.py: the same counts as ``dataset=cells/synthetic`` with those sizes) with the
census batch columns dataset_id / assay / suspension_type / donor_id. Never committed: the
default output is under data/ (git-ignored).

``measure``, for each file, each in its own process:
- loader alone: the stream source (methods/scvi/staging.py, ``staging=stream``) over the backed
  file with 0, 1 and 2 worker processes, cells/s over ``--loader-cells`` cells and the process's
  peak RSS;
- training: ``python -m harness method=scvi dataset=cells/h5ad dataset.backed=true
  method.staging=stream`` for one epoch (or `--train-steps` optimizer steps) with
  the same worker counts: cells/s of training and peak RSS;
- ``--peer PY``: scvi-tools' AnnDataLoader on the same file (its own process, in-memory read:
  scvi-tools does not stream a backed file), cells/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BATCH_KEYS = "[dataset_id,assay,suspension_type,donor_id]"


def generate(a: argparse.Namespace) -> None:
    import anndata
    import h5py
    import pandas as pd

    from methods.scvi.data import SyntheticConfig, census_obs, count_blocks, recipe

    write_elem = getattr(anndata, "io", anndata.experimental).write_elem
    cfg = SyntheticConfig(name="census", n_cells=a.cells, n_genes=a.genes, n_batches=a.batches,
                          library_mean=a.library, seed=a.seed)  # fmt: skip
    r = recipe(cfg)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial.h5ad")
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        x = f.create_group("X")
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                        "shape": np.array([a.cells, a.genes])})  # fmt: skip
        data = x.create_dataset("data", (0,), "float32", maxshape=(None,), chunks=(1 << 20,))
        indices = x.create_dataset("indices", (0,), "int32", maxshape=(None,), chunks=(1 << 20,))
        indptr = np.zeros(a.cells + 1, dtype=np.int64)
        row = 0
        for block in count_blocks(cfg, r):
            nnz0 = data.shape[0]
            data.resize((nnz0 + block.nnz,))
            indices.resize((nnz0 + block.nnz,))
            data[nnz0:], indices[nnz0:] = block.data, block.indices
            indptr[row + 1 : row + 1 + block.shape[0]] = nnz0 + block.indptr[1:]
            row += block.shape[0]
            if row % (_every := 65536 * 4) < block.shape[0]:
                print(f"  {row:>9} cells, {data.shape[0]:>12} nonzeros, "
                      f"{time.perf_counter() - t0:6.0f} s", flush=True)  # fmt: skip
        x.create_dataset("indptr", data=indptr)
        write_elem(f, "obs", census_obs(r))
        var = pd.DataFrame({"true_theta": r.theta}, index=[f"gene{j:05d}" for j in range(a.genes)])
        write_elem(f, "var", var)
        for key in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
            write_elem(f, key, {})
    tmp.replace(out)
    size = out.stat().st_size / 2**30
    print(f"wrote {out}: {a.cells} cells x {a.genes} genes, {indptr[-1]} nonzeros "
          f"({indptr[-1] / a.cells / a.genes:.2%}), {size:.2f} GiB in {time.perf_counter() - t0:.0f} s")  # fmt: skip


# ---- measurements (each in its own process) --------------------------------------------------
def _measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[int, float]:
    """Run ``cmd``; (exit status, peak RSS MB of that process; benchmarks/peak.py)."""
    from peak import measured

    rc, _, rss = measured(cmd, REPO, {**os.environ, **(env or {})}, log)
    return rc, rss


def loader_alone(path: str, workers: int, cells: int, chunk: int, batch_size: int) -> None:
    """The stream source over the backed file: cells/s of minibatches reaching the device."""
    import h5py
    import torch

    from methods.scvi.staging import HostData, RowReader, StreamSource

    torch.set_num_threads(1)
    with h5py.File(path, "r") as f:
        n, g = (int(v) for v in f["X"].attrs["shape"])
    zeros = np.zeros(n)
    host = HostData(None, RowReader(path, g), np.zeros(n, dtype=np.int64), zeros, zeros, g)
    mask = np.ones(n, dtype=bool)
    source = StreamSource(host, mask, torch.device("cpu"), torch.float32, chunk, workers, 0)
    seen, t0 = 0, time.perf_counter()
    for batch in source.epoch(batch_size, seed=0, epoch=0):
        seen += batch.x.shape[0]
        if seen >= cells:
            break
    print(json.dumps({"cells": seen, "seconds": time.perf_counter() - t0}))


def peer_loader(path: str, cells: int, batch_size: int) -> None:
    """scvi-tools' AnnDataLoader over the same file (read into memory)."""
    import anndata

    t_read = time.perf_counter()
    adata = anndata.read_h5ad(path)
    t_read = time.perf_counter() - t_read
    import scvi

    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    manager = scvi.model.SCVI._get_most_recent_anndata_manager(adata, required=True)
    loader = scvi.dataloaders.AnnDataLoader(manager, batch_size=batch_size, shuffle=True)
    seen, t0 = 0, time.perf_counter()
    for batch in loader:
        seen += batch["X"].shape[0]
        if seen >= cells:
            break
    print(json.dumps({"cells": seen, "seconds": time.perf_counter() - t0, "read_s": t_read}))


def measure(a: argparse.Namespace) -> None:
    out = REPO / "results" / "scvi_stream"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(a.threads)}
    for path in a.files:
        n = _cells(path)
        for w in [int(v) for v in a.workers.split(",")]:
            log = out / f"loader-{Path(path).stem}-w{w}.log"
            cmd = [sys.executable, __file__, "_loader", path, str(w), str(a.loader_cells),
                   str(a.chunk), str(a.batch_size)]  # fmt: skip
            rc, rss = _measured(cmd, log, env)
            r = _last_json(log) if rc == 0 else {}
            rows.append({"file": Path(path).name, "cells": n, "what": "loader", "workers": w,
                         "cells_per_s": r.get("cells", 0) / r.get("seconds", float("inf")),
                         "peak_rss_mb": rss, "rc": rc})  # fmt: skip
            print(_line(rows[-1]), flush=True)
            if a.no_train:
                continue
            log = out / f"train-{Path(path).stem}-w{w}.log"
            cmd = [sys.executable, "-m", "harness", "method=scvi", "dataset=cells/h5ad",
                   f"dataset.path={Path(path).resolve()}", "dataset.backed=true",
                   f"dataset.batch_keys={BATCH_KEYS}", "method.staging=stream",
                   f"method.workers={w}", f"method.chunk_cells={a.chunk}",
                   f"method.batch_size={a.batch_size}", "method.max_epochs=1",
                   f"method.n_eval_cells={a.eval_cells}", "hardware=cpu",
                   f"hardware.threads={a.threads}", "tracking.mlflow=false",
                   "bench.baseline=off", "bench.warmup_steps=2",
                   *([f"method.max_steps={a.train_steps}"] if a.train_steps else [])]  # fmt: skip
            rc, rss = _measured(cmd, log, env)
            text = log.read_text()
            cps = re.search(r"^\s+cells_per_s\s+: ([0-9.e+]+)", text, re.M)
            rows.append({"file": Path(path).name, "cells": n, "what": "train", "workers": w,
                         "cells_per_s": float(cps.group(1)) if cps else 0.0, "peak_rss_mb": rss,
                         "rc": rc})  # fmt: skip
            print(_line(rows[-1]), flush=True)
        if a.peer:
            log = out / f"peer-{Path(path).stem}.log"
            cmd = [a.peer, __file__, "_peer", path, str(a.loader_cells), str(a.batch_size)]
            rc, rss = _measured(cmd, log, {"OMP_NUM_THREADS": str(a.threads)})
            r = _last_json(log) if rc == 0 else {}
            rows.append({"file": Path(path).name, "cells": n, "what": "scvi-tools loader",
                         "workers": 0, "cells_per_s": r.get("cells", 0) / r.get("seconds", float("inf")),
                         "peak_rss_mb": rss, "rc": rc})  # fmt: skip
            print(_line(rows[-1]), flush=True)
    (out / "stream.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out / 'stream.json'}")


def _cells(path: str) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["X"].attrs["shape"][0])


def _last_json(log: Path) -> dict:
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _line(r: dict) -> str:
    return (f"{r['file']:22} {r['cells']:>9} {r['what']:18} workers {r['workers']}  "
            f"{r['cells_per_s']:>10.0f} cells/s  peak RSS {r['peak_rss_mb']:>7.0f} MB  rc {r['rc']}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loader"]:
        p, w, c, ch, b = argv[1:]
        return loader_alone(p, int(w), int(c), int(ch), int(b))
    if argv[:1] == ["_peer"]:
        return peer_loader(argv[1], int(argv[2]), int(argv[3]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--cells", type=int, default=1_000_000)
    g.add_argument("--genes", type=int, default=8000)
    g.add_argument("--batches", type=int, default=12)
    g.add_argument("--library", type=float, default=1500.0)
    g.add_argument("--seed", type=int, default=2025)
    g.add_argument("--out", default="data/census_1m.h5ad")
    m = sub.add_parser("measure")
    m.add_argument("files", nargs="+")
    m.add_argument("--workers", default="0,1,2")
    m.add_argument("--loader-cells", type=int, default=200_000)
    m.add_argument("--chunk", type=int, default=8192)
    m.add_argument("--batch-size", type=int, default=128)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--eval-cells", type=int, default=2000)
    m.add_argument("--no-train", action="store_true")
    m.add_argument("--train-steps", type=int, default=0,
                   help="stop training after this many steps (0: one full epoch)")  # fmt: skip
    m.add_argument("--peer", default="")
    a = p.parse_args(argv)
    (generate if a.cmd == "generate" else measure)(a)


if __name__ == "__main__":
    main()
