"""Side-by-side training of this scVI and scvi-tools' SCVI on the same data (read-only surface).

    python -m methods.scvi.peer --cells 20000 --genes 2000 --epochs 2 --threads 1
    python -m methods.scvi.peer --device cuda --cells 50000 --genes 8000 --batch-size 1024
    python -m methods.scvi.peer -- method/preset=census dataset.n_genes=3000

Both train the same cells (same train/held-out split), architecture, epochs, batch size,
optimiser and KL warm-up, alternating (ours, theirs) ``--repeats`` times so that a shared
machine's load hits both alike. Throughput = training cells × epochs / Σ epoch seconds
(timed inside the training loops: data loading included, setup and evaluation excluded);
the ELBOs are the last epoch's training ELBO and the held-out ELBO (one sample, eval mode),
both as positive per-cell losses. Needs ``pip install -e '.[peers]'`` (scvi-tools, BSD).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def run_ours(method: Any, state: Any) -> dict[str, float]:
    from harness.api import RunContext

    t0 = time.perf_counter()
    out = method.run(state, RunContext()).outputs
    wall = time.perf_counter() - t0
    last = method.last
    return {
        "cells_per_s": last.cells_per_s,
        "cells_per_cpu_s": last.cells / last.cpu_seconds,
        "epoch_s": last.seconds,
        "wall_s": wall,
        "elbo_train": last.history["elbo_train"][-1],
        "elbo_heldout": float(np.ravel(out["elbo_heldout"].cpu())[0]),
    }


def run_scvi_tools(
    adata: Any, cfg: Any, split: tuple[np.ndarray, np.ndarray], epochs: int, device: str
) -> dict[str, float]:
    """scvi-tools' SCVI with the same settings; imported here only (the peer path)."""
    import scvi
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.cpu: list[float] = []
            self.t0 = self.c0 = 0.0

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    scvi.settings.seed = cfg.seed
    scvi.settings.verbosity = 40
    scvi.model.SCVI.setup_anndata(adata, batch_key="peer_batch")
    model = scvi.model.SCVI(
        adata,
        n_hidden=cfg.n_hidden,
        n_latent=cfg.n_latent,
        n_layers=cfg.n_layers,
        dropout_rate=cfg.dropout_rate,
        dispersion=cfg.dispersion,
        gene_likelihood=cfg.gene_likelihood,
        encode_covariates=cfg.encode_covariates,
        deeply_inject_covariates=cfg.deeply_inject_covariates,
        use_observed_lib_size=cfg.use_observed_lib_size,
    )
    timer = EpochTimer()
    train_idx, eval_idx = split
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        batch_size=cfg.batch_size,
        datasplitter_kwargs={"external_indexing": [train_idx, eval_idx, np.array([], int)]},
        plan_kwargs={
            "lr": cfg.lr,
            "eps": cfg.adam_eps,
            "weight_decay": cfg.weight_decay,
            "n_epochs_kl_warmup": cfg.n_epochs_kl_warmup,
            "n_steps_kl_warmup": cfg.n_steps_kl_warmup,
            "max_kl_weight": cfg.max_kl_weight,
            "min_kl_weight": cfg.min_kl_weight,
        },
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    wall = time.perf_counter() - t0
    seconds = sum(timer.seconds)
    return {
        "cells_per_s": train_idx.size * epochs / seconds,
        "cells_per_cpu_s": train_idx.size * epochs / sum(timer.cpu),
        "epoch_s": seconds,
        "wall_s": wall,
        "elbo_train": float(model.history["elbo_train"].to_numpy().ravel()[-1]),
        "elbo_heldout": -float(model.get_elbo(indices=eval_idx, batch_size=4096)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="alternating (ours, theirs) rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("overrides", nargs="*", help="extra harness overrides (method.*, dataset.*)")
    args = ap.parse_args(argv)

    import anndata
    import pandas as pd

    from harness.api import prepared
    from methods.scvi.data import BATCH, batch_from_keys

    overrides = [
        "method=scvi",
        "dataset=cells/synthetic",
        f"dataset.n_cells={args.cells}",
        f"dataset.n_genes={args.genes}",
        f"method.max_epochs={args.epochs}",
        f"method.batch_size={args.batch_size}",
        f"hardware={'cpu' if args.device == 'cpu' else 'auto'}",
        f"hardware.threads={args.threads}",
        *args.overrides,
    ]
    ready = prepared(overrides)
    ours, data, state, runtime = ready.method, ready.data, ready.state, ready.runtime
    mcfg = ready.config.method
    src = data["cells"]
    x = src.X[state.cells][:, state.genes]
    keys = list(mcfg.batch_keys) if mcfg.batch_keys is not None else [BATCH]
    batch = np.asarray(batch_from_keys(src.obs, keys, "method.batch_keys"))[state.cells]
    peer_adata = anndata.AnnData(
        X=x.astype(np.float32),
        obs=pd.DataFrame({"peer_batch": pd.Categorical(batch)}, index=src.obs_names[state.cells]),
    )
    rows: dict[str, list[dict[str, float]]] = {"ours": [], "scvi-tools": []}
    for r in range(args.repeats):
        rows["ours"].append(run_ours(ours, state))
        rows["scvi-tools"].append(
            run_scvi_tools(
                peer_adata.copy(), mcfg, state.split, state.schedule.max_epochs, args.device
            )
        )
        print(
            f"round {r + 1}/{args.repeats}: ours {rows['ours'][-1]['cells_per_s']:.0f} cells/s, "
            f"scvi-tools {rows['scvi-tools'][-1]['cells_per_s']:.0f} cells/s",
            flush=True,
        )
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    pairs = list(zip(rows["ours"], rows["scvi-tools"], strict=True))
    ratios = [a["cells_per_s"] / b["cells_per_s"] for a, b in pairs]
    cpu_ratios = [a["cells_per_cpu_s"] / b["cells_per_cpu_s"] for a, b in pairs]
    ours_e, peer_e = med["ours"]["elbo_heldout"], med["scvi-tools"]["elbo_heldout"]
    rel = abs(ours_e - peer_e) / abs(peer_e)
    print(
        f"\n{state.n_train} training cells × {state.shape.n_genes} genes, "
        f"{state.schedule.max_epochs} epochs, batch {mcfg.batch_size}, "
        f"{mcfg.gene_likelihood}, {mcfg.n_layers}×{mcfg.n_hidden} → {mcfg.n_latent}, "
        f"device {runtime.device}, {torch.get_num_threads()} threads, staging {state.layout}"
    )
    head = ("cells/s", "cells/cpu-s", "epoch s", "wall s", "ELBO train", "ELBO held-out")
    print(f"{'':12}" + "".join(f"{h:>14}" for h in head))
    for name, m in med.items():
        print(
            f"{name:12}{m['cells_per_s']:14.0f}{m['cells_per_cpu_s']:14.0f}{m['epoch_s']:14.2f}"
            f"{m['wall_s']:14.2f}{m['elbo_train']:14.3f}{m['elbo_heldout']:14.3f}"
        )

    def fmt(values: list[float]) -> str:
        each = ", ".join(f"{q:.2f}" for q in values)
        return f"median {statistics.median(values):.2f}× (rounds: {each})"

    print(f"throughput ours/scvi-tools, wall: {fmt(ratios)}")
    print(f"throughput ours/scvi-tools, CPU time: {fmt(cpu_ratios)}")
    print(f"held-out ELBO: ours {ours_e:.3f}, scvi-tools {peer_e:.3f}, differ by {rel:.2%}")
    result = {
        "args": vars(args) | {"json": str(args.json)},
        "rows": rows,
        "median": med,
        "ratios_wall": ratios,
        "ratios_cpu": cpu_ratios,
        "elbo_heldout_rel": rel,
        "layout": state.layout,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
