"""``run.output=<file>`` for CellBender (read-only). ``.h5ad``: denoised X, the raw counts in
a layer, the droplet latents in obs/obsm under cellbender's names (``cell_probability``,
``cell_size``, ``droplet_efficiency``, ``background_fraction``, ``gene_expression_encoding``;
``var["ambient_expression"]``; ``uns["learning_curve_train_elbo"]``, ...); a synthetic input's
ground truth stays apart (its obs columns as ``truth_<name>``, the rest in ``uns["truth"]``).
``.h5``: cellbender 0.4.0's layout — a CellRanger v3 matrix of the denoised counts
(``/matrix``), the analysed droplets' latents (``/droplet_latents``), the global latents
(``/global_latents``) and the learning curve (``/metadata``) — plus ``<name>_filtered.h5`` with
the called cells only, so ``scanpy.read_10x_h5`` and cellbender's ``anndata_from_h5`` read both
as they read its own."""

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


def _matrix(f: Any, x: sp.csr_matrix, barcodes: np.ndarray, genes: Any) -> None:
    """CellRanger v3 ``/matrix``: genes × barcodes in CSC (= the droplets' CSR), features."""
    g = f.create_group("matrix")
    g["data"] = x.data.astype(np.int32)
    g["indices"] = x.indices.astype(np.int64)
    g["indptr"] = x.indptr.astype(np.int64)
    g["shape"] = np.array([x.shape[1], x.shape[0]], dtype=np.int32)
    g["barcodes"] = np.asarray(barcodes).astype("S")
    feats = g.create_group("features")
    names = np.asarray(genes.index).astype("S")
    ids = np.asarray(genes.get("gene_ids", genes.index)).astype("S")
    feats["id"], feats["name"] = ids, names
    feats["feature_type"] = np.full(names.size, b"Gene Expression")
    feats["genome"] = np.full(names.size, b"")
    feats["_all_tag_keys"] = np.array([b"genome"])


def write_h5(outputs: dict[str, Any], adata: Any, path: Path) -> None:
    """The .h5 pair of the module doc."""
    import h5py

    from methods.cellbender.method import GLOBAL_LATENTS

    x = sp.csr_matrix(outputs["denoised"], dtype=np.float64)
    x.data = np.rint(x.data)
    x.eliminate_zeros()
    x.sort_indices()
    rows = np.asarray(outputs["analysed"], dtype=np.int64)
    p = np.asarray(outputs["cell_probability"], dtype=np.float64)
    latents = {
        "cell_probability": p[rows],
        "cell_size": np.asarray(outputs["cell_size"])[rows],
        "droplet_efficiency": np.asarray(outputs["efficiency"])[rows],
        "background_fraction": np.asarray(outputs["background_fraction"])[rows],
        "gene_expression_encoding": np.asarray(outputs["latent_z"], dtype=np.float32)[rows],
    }
    glob = dict(zip(GLOBAL_LATENTS, np.asarray(outputs["global_latents"]), strict=True))
    cells = np.flatnonzero(p > 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    for file, keep in ((path, None), (path.with_name(f"{path.stem}_filtered.h5"), cells)):
        with h5py.File(file, "w") as f:
            sub = x if keep is None else x[keep]
            _matrix(f, sub, adata.obs_names if keep is None else adata.obs_names[keep], adata.var)
            d = f.create_group("droplet_latents")
            order = rows if keep is None else np.flatnonzero(np.isin(rows, keep))
            pick = slice(None) if keep is None else order
            for k, v in latents.items():
                d[k] = v[pick]
            idx = rows if keep is None else np.searchsorted(keep, rows[order])
            d["barcode_indices_for_latents"] = idx.astype(np.int64)
            gl = f.create_group("global_latents")
            gl["ambient_expression"] = np.asarray(outputs["ambient"], dtype=np.float64)
            gl["empty_droplet_size_lognormal_loc"] = glob["empty_droplet_size_lognormal_loc"]
            gl["empty_droplet_size_lognormal_scale"] = glob["empty_droplet_size_lognormal_scale"]
            gl["cell_size_lognormal_std"] = glob["cell_size_lognormal_std"]
            gl["swapping_fraction_dist_params"] = np.array(
                [glob["swapping_fraction_alpha"], glob["swapping_fraction_beta"]]
            )
            meta = f.create_group("metadata")
            meta["learning_curve_train_elbo"] = np.asarray(outputs["elbo_train"])
            meta["learning_curve_test_elbo"] = np.asarray(outputs["elbo_test"])
