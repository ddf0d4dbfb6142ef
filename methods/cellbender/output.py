"""``run.output=<file.h5ad>`` for CellBender (read-only): denoised X, the raw counts in a
layer, the droplet latents in obs/obsm, the global latents in uns."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp


def write_h5ad(outputs: dict[str, Any], adata: Any, path: Path, cfg: Any) -> None:
    import anndata

    out = anndata.AnnData(
        X=sp.csr_matrix(outputs["denoised"], dtype=np.float32),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
    )
    out.layers["raw"] = sp.csr_matrix(adata.X, dtype=np.float32)
    for name in ("cell_probability", "cell_size", "efficiency", "background_fraction"):
        out.obs[name] = np.asarray(outputs[name])
    out.obs["cell_called"] = out.obs["cell_probability"] > 0.5
    out.obsm["gene_expression_encoding"] = np.asarray(outputs["latent_z"], dtype=np.float32)
    out.var["ambient_expression"] = np.asarray(outputs["ambient"])
    out.uns["cellbender"] = {
        "learning_curve_train": np.asarray(outputs["elbo_train"]),
        "learning_curve_test": np.asarray(outputs["elbo_test"]),
        "config": {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str))},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)
