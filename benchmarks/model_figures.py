"""The figures of the two foundation-model methods, each run through ``python -m harness``.

    python benchmarks/model_figures.py scbert          # pbmc68k vs logistic regression, ECE of
                                                      # the Bayesian head vs Stage A, MC at T=8
                                                      # vs the naive path, pruned head speed-up
    python benchmarks/model_figures.py cellwhisperer   # pbmc68k zero-shot vs logistic
                                                      # regression, LU cache vs recompute,
                                                      # pairs/s, cells/s, import cost

Every model run is its own ``python -m harness`` process on CPU (MLflow and baselines off) and
its summary metrics are read back; "identical" means the same output hash. The logistic
regression (scikit-learn, a figure, not a gate) is fitted on the same train split the method
trains on, on log1p(counts per 10k), and scored on the same test cells (scBERT: the known
types only, the novel type excluded as in its own metrics).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
COMMON = ["hardware=cpu", "tracking.mlflow=false", "bench.baseline=off"]


def harness(*args: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    work = REPO / "results" / "model_figures"
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "harness", *args, *COMMON], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"harness {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return dict(re.findall(r"^\s+([\w@]+)\s+: (\S+)", proc.stdout, re.M))


def dataset(*overrides: str):
    from harness.config.compose import compose_checked
    from harness.config.validate import locate

    _, valid = compose_checked([*overrides, *COMMON])
    return locate(valid.dataset._target_, "dataset._target_")(valid.dataset)


def logistic_regression(adata, train: np.ndarray, test: np.ndarray, labels: np.ndarray):
    """Accuracy and macro-F1 of a multinomial logistic regression on log1p(CP10k)."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    x = sp.csr_matrix(adata.X, dtype=np.float64)
    scale = 1e4 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1)
    x = sp.diags(scale) @ x
    x.data = np.log1p(x.data)
    model = LogisticRegression(max_iter=2000, C=1.0).fit(x[train], labels[train])
    pred = model.predict(x[test])
    return float(np.mean(pred == labels[test])), float(
        f1_score(labels[test], pred, average="macro")
    )


def scbert(a: argparse.Namespace) -> None:
    from methods.scbert.check import classes_and_eval

    pbmc = ["method=scbert", "dataset=labelled/pbmc68k"]
    bayes = harness(*pbmc)
    stage_a = harness(*pbmc, "method.epochs_b=0", "method.prune_target=0")
    adata = dataset(*pbmc)["cells"]
    _, y, novel, rows = classes_and_eval(adata)
    split = adata.obs["split"].to_numpy().astype(str)
    novel_all = (
        adata.obs["novel"].to_numpy() if "novel" in adata.obs else np.zeros(adata.n_obs, bool)
    )
    labels = adata.obs["label"].astype(str).to_numpy()
    acc, f1 = logistic_regression(adata, np.flatnonzero((split == "train") & ~novel_all),
                                  rows[~novel], labels)  # fmt: skip
    print("scBERT on pbmc68k (test split, known types):")
    print(f"  {'':28} {'accuracy':>9} {'macro-F1':>9} {'ECE':>7}")
    print(f"  {'Bayesian head (stages A+B)':28} {float(bayes['accuracy']):>9.3f} "
          f"{float(bayes['macro_f1']):>9.3f} {float(bayes['ece']):>7.3f}")  # fmt: skip
    print(f"  {'Stage A only (deterministic)':28} {float(stage_a['accuracy']):>9.3f} "
          f"{float(stage_a['macro_f1']):>9.3f} {float(stage_a['ece']):>7.3f}")  # fmt: skip
    print(f"  {'logistic regression':28} {acc:>9.3f} {f1:>9.3f} {'-':>7}")

    synth = ["method=scbert", f"method.mc_samples={a.mc_samples}"]
    fast = harness(*synth)
    naive = harness(*synth, "method.naive_mc=true")
    same = fast["output_hash"] == naive["output_hash"]
    print(f"MC inference, T={a.mc_samples}, {'identical' if same else 'DIFFERENT'} outputs "
          f"(hash {fast['output_hash']}): head-only {float(fast['mc_s']):.3f} s, naive T passes "
          f"{float(naive['mc_s']):.3f} s, speed-up {float(naive['mc_s']) / float(fast['mc_s']):.1f}x")  # fmt: skip
    pruned_head(a)


def pruned_head(a: argparse.Namespace) -> None:
    """The head at 30% pruning vs unpruned: MC head inference time and parameters."""
    import torch

    from methods.scbert.head import Head

    torch.set_num_threads(1)
    torch.manual_seed(0)
    seq_len, batch = a.genes + 1, 512
    head = Head(48, seq_len, 5, (512, 128))
    head.set_bayes(True)
    flat = torch.relu(torch.randn(batch, seq_len))

    def timed(h: Head) -> float:
        times = []
        with torch.no_grad():
            for _ in range(30):
                t0 = time.perf_counter()
                for s in range(a.mc_samples):
                    h.from_flat(flat, sample=True, generator=torch.Generator().manual_seed(s))
                times.append(time.perf_counter() - t0)
        return float(np.median(times))

    full_s, full_p = timed(head), head.parameter_count()
    head.prune_rows(round(0.3 * head.fc1.out_features))
    pruned_s, pruned_p = timed(head), head.parameter_count()
    print(f"pruned head (30% of fc1 rows, {seq_len} inputs, batch {batch}, T={a.mc_samples}, "
          f"1 thread): {full_s * 1e3:.2f} ms -> {pruned_s * 1e3:.2f} ms ({full_s / pruned_s:.2f}x), "
          f"parameters {full_p} -> {pruned_p} ({1 - pruned_p / full_p:.1%} removed)")  # fmt: skip


def cellwhisperer(a: argparse.Namespace) -> None:
    from methods.cellwhisperer.check import eval_labels

    pbmc = ["method=cellwhisperer", "dataset=captioned/pbmc68k"]
    zs = harness(*pbmc)
    adata = dataset(*pbmc)["cells"]
    split = adata.obs["split"].to_numpy().astype(str)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    eval_labels(adata)  # the same evaluation cells as the method's metrics (the test split)
    acc, f1 = logistic_regression(adata, np.flatnonzero(split == "train"),
                                  np.flatnonzero(split == "test"), labels)  # fmt: skip
    print("CellWhisperer on pbmc68k (test split):")
    print(f"  zero-shot (no labels seen)   top-1 {float(zs['zeroshot_top1']):.3f}  "
          f"macro-F1 {float(zs['zeroshot_macro_f1']):.3f}")  # fmt: skip
    print(f"  logistic regression (labels) top-1 {acc:.3f}  macro-F1 {f1:.3f}")

    cached = harness("method=cellwhisperer")
    recompute = harness("method=cellwhisperer", "method.cache=false")
    same = cached["output_hash"] == recompute["output_hash"]
    print(f"LU cache: train {float(cached['train_s']):.1f} s vs recomputing the locked tower "
          f"{float(recompute['train_s']):.1f} s, speed-up "
          f"{float(recompute['train_s']) / float(cached['train_s']):.2f}x, "
          f"{'identical' if same else 'DIFFERENT'} outputs")  # fmt: skip
    print(f"training {float(cached['pairs_per_s']):.0f} pairs/s (cached), "
          f"{float(recompute['pairs_per_s']):.0f} pairs/s (recomputed); embedding "
          f"{float(cached['cells_per_s_embed']):.0f} cells/s")  # fmt: skip
    rctd = ["method=rctd", "dataset.n_pixels=200", "method.sigma_override=100", "bench.repeats=1",
            *COMMON]  # fmt: skip
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harness", *rctd], cwd=REPO / "results",
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    ).stderr  # fmt: skip
    heavy = [m for m in ("transformers", "tokenizers", "methods.cellwhisperer")
             if re.search(rf"\|\s+{re.escape(m)}$", imports, re.M)]  # fmt: skip
    print(
        f"a method=rctd run imports {heavy or 'none of transformers, tokenizers, methods.cellwhisperer'}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", choices=["scbert", "cellwhisperer"])
    p.add_argument("--mc-samples", type=int, default=8)
    p.add_argument("--genes", type=int, default=200)
    a = p.parse_args()
    (scbert if a.which == "scbert" else cellwhisperer)(a)


if __name__ == "__main__":
    main()
