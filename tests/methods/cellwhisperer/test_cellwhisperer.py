"""CellWhisperer: rank-value tokens, a locally trained tokenizer, a locally saved pretrained
checkpoint loaded (never downloaded), the LU cache giving the same results as recomputing the
locked tower every step, a NaN loss stopping with one line, zero-shot scoring that works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from methods.cellwhisperer.tokenize import TextTokens, gene_medians, rank_tokens
from tests.conftest import REPO

TINY = ["hardware=cpu", "hardware.threads=1", "tracking.mlflow=false", "bench.warmup_steps=2",
        "dataset.n_cells=400", "dataset.n_genes=60", "method.batch_size=32",
        "method.projection=64", "method.cell_hidden=32", "method.text_hidden=32",
        "method.max_tokens=32"]  # fmt: skip


def _harness(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "harness", "method=cellwhisperer", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _metrics(stdout: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"^\s+([\w@]+)\s+: ([-0-9.e+]+)$", stdout, re.M)}


def test_rank_value_tokens():
    x = sp.csr_matrix(np.array([[0, 10, 1, 5], [4, 0, 0, 0]], dtype=np.float64))
    med = gene_medians(x)
    t = rank_tokens(x, med, max_tokens=2)
    assert t.shape == (2, 3) and t[:, 0].tolist() == [1, 1]  # [CLS]
    # row 0 normalised by the per-gene medians: gene 1 (10/med) ranks first
    assert t[0, 1].item() - 2 in (1, 2, 3) and t[1].tolist() == [1, 2, 0]


@pytest.mark.slow
def test_local_tokenizer_and_pretrained_checkpoint(tmp_path):
    tok = TextTokens(["A sample of alpha cells", "beta cells in lung"], max_len=8)
    ids, mask = tok(["alpha cells in lung", "unknown words"])
    assert ids.shape == (2, 8) and ids[0, 0] == 2 and (mask.sum(1) > 0).all()
    assert ids[1, 1] == 1  # [UNK]
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "sample", "of",
                                "alpha", "cells"]))  # fmt: skip
    model_dir = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(model_dir)  # fmt: skip
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(model_dir)
    proc = _harness(tmp_path, *TINY, "method.epochs=1", f"method.text_model={model_dir}")
    assert proc.returncode == 0, proc.stderr
    missing = _harness(tmp_path, *TINY, "method.text_model=no/such/model")
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and "never downloaded" in lines[0]


@pytest.mark.slow
def test_locked_tower_cache_equals_recomputing(tmp_path):
    a = _harness(tmp_path, *TINY, "method.epochs=2", "bench.baseline=off")
    b = _harness(tmp_path, *TINY, "method.epochs=2", "bench.baseline=off", "method.cache=false")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ha = re.search(r"output_hash\s+: (\w+)", a.stdout)[1]
    hb = re.search(r"output_hash\s+: (\w+)", b.stdout)[1]
    assert ha == hb  # the same training: the cache only saves the recomputation


def test_nan_loss_stops_with_one_line(tmp_path):
    proc = _harness(tmp_path, *TINY, "method.lr=1e30", "method.epochs=2")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "NaN" in lines[0], proc.stderr


@pytest.mark.slow
def test_zero_shot_on_held_out_cells_and_wordings(tmp_path):
    # mid-sized towers (found by a sweep: the 32-wide ones reach top-1 0.79, these 0.94 in 2 s)
    learn = [a for a in TINY if not a.startswith(("method.projection", "method.cell_hidden",
                                                  "method.text_hidden"))]  # fmt: skip
    learn += ["method.projection=256", "method.cell_hidden=64", "method.text_hidden=64",
              "method.epochs=8", "method.lr=2e-3", f"run.output={tmp_path}/zs.h5ad"]  # fmt: skip
    proc = _harness(tmp_path, *learn)
    assert proc.returncode == 0, proc.stderr
    m = _metrics(proc.stdout)
    assert m["zeroshot_top1"] >= 0.7 and m["recall_text_to_group@5"] >= 0.9
    import anndata

    out = anndata.read_h5ad(tmp_path / "zs.h5ad")
    assert out.obsm["X_cellwhisperer"].shape[1] == 256 and "predicted_label" in out.obs
    assert torch.is_tensor(torch.as_tensor(out.obsm["prompt_scores"].to_numpy()))
