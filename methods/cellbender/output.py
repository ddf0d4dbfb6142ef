"""``run.output=<file.h5ad>`` for CellBender (read-only): denoised X, the raw counts in a
layer, the droplet latents in obs/obsm under cellbender's names (``cell_probability``,
``cell_size``, ``droplet_efficiency``, ``background_fraction``, ``gene_expression_encoding``;
``var["ambient_expression"]``; ``uns["learning_curve_train_elbo"]``, ...). A synthetic
input's ground truth stays apart: its obs columns as ``truth_<name>``, the rest in
``uns["truth"]``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp


def write_h5ad(outputs: dict[str, Any], adata: Any, path: Path, cfg: Any) -> None:
    import anndata

    obs = adata.obs.copy()
    if "truth" in adata.uns:  # a generator's data: every obs column is ground truth
        obs.columns = [f"truth_{c}" for c in obs.columns]
    out = anndata.AnnData(
        X=sp.csr_matrix(outputs["denoised"], dtype=np.float32), obs=obs, var=adata.var.copy()
    )
    out.layers["raw"] = sp.csr_matrix(adata.X, dtype=np.float32)
    for name, key in (("cell_probability", "cell_probability"), ("cell_size", "cell_size"),
                      ("droplet_efficiency", "efficiency"),
                      ("background_fraction", "background_fraction")):  # fmt: skip
        out.obs[name] = np.asarray(outputs[key])
    out.obs["cell_called"] = out.obs["cell_probability"] > 0.5
    out.obsm["gene_expression_encoding"] = np.asarray(outputs["latent_z"], dtype=np.float32)
    out.var["ambient_expression"] = np.asarray(outputs["ambient"])
    out.uns["learning_curve_train_elbo"] = np.asarray(outputs["elbo_train"])
    out.uns["learning_curve_test_elbo"] = np.asarray(outputs["elbo_test"])
    out.uns["cellbender"] = {
        "config": {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str))},
    }
    if "truth" in adata.uns:
        truth = {k: adata.uns[k] for k in ("chi_ambient", "chi_bar") if k in adata.uns}
        out.uns["truth"] = {**dict(adata.uns["truth"]), **truth}
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
