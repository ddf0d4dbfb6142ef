"""The pack's problem sizes: ``GPU`` (one H100, the whole pack in ~8 minutes; chosen from the
CPU figures in README.md, not yet timed on a GPU) and ``TINY`` (``--tiny``: the same code paths
on toy inputs, seconds per run on a CPU). Each entry is a list of harness overrides."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sizes:
    """Overrides per method and check (method names are ``conf/method/<name>.yaml``)."""

    run: dict[str, list[str]]  # check 1: the method on the device, its variants
    agree: dict[str, list[str]]  # check 2: device vs CPU on the same input (CPU-sized)
    rctd_memory: list[str]  # check 3: RCTD batch_size=auto
    cellbender_memory: list[str]  # check 3: CellBender's posterior
    judge: list[str]  # check 4: harness.compare settings and RCTD input
    planted: float  # check 4: the planted slowdown, a fraction of the RCTD solver's time
    loader: list[str]  # check 5: scVI streaming
    loader_workers: tuple[int, ...]
    peer: list[str] = field(default_factory=list)  # check 6: benchmarks/rctd_peer.py arguments
    threads: int = 0  # hardware.threads of the in-process runs (0: the profile's)


METHODS = ("rctd", "scvi", "cellbender", "scbert", "cellwhisperer")


def _w(text: str) -> list[str]:
    """Overrides written as one space-separated string."""
    return text.split()


GPU = Sizes(
    run={
        "rctd": _w("dataset.n_pixels=10000 dataset.n_genes=2000 bench.repeats=2"),
        "scvi": _w("dataset.n_cells=20000 dataset.n_genes=2000 method.max_epochs=10"),
        "cellbender": _w("method.epochs=30"),
        "scbert": [],
        "cellwhisperer": [],
    },
    agree={
        "rctd": _w("dataset.n_pixels=2000 bench.repeats=1"),
        "scvi": _w("dataset.n_cells=4000 dataset.n_genes=500 method.max_epochs=5"),
        "cellbender": _w("dataset.n_droplets=3000 method.epochs=10"),
        "scbert": _w("dataset.cells_per_type=100 method.epochs_a=2 method.epochs_b=1"),
        "cellwhisperer": _w("dataset.n_cells=1000 method.epochs=3"),
    },
    rctd_memory=_w(
        "dataset.n_pixels=50000 dataset.n_genes=2000 dataset.sparse=true "
        "method.sigma_override=100 bench.repeats=1"
    ),
    cellbender_memory=_w("dataset.n_droplets=10000 dataset.cells_per_type=1000 method.epochs=5"),
    judge=_w(
        "dataset.n_pixels=5000 method.sigma_override=100 compare.min_pairs=3 "
        "compare.max_pairs=6 compare.max_seconds=90"
    ),
    planted=0.25,
    loader=_w(
        "dataset.n_cells=30000 dataset.n_genes=2000 method.max_epochs=2 method.staging=stream"
    ),
    loader_workers=(0, 2, 8),
    peer=_w("--n-pixels 10000 --n-genes 1000 --modes full --sigma shared --shared-sigma 100"),
)

_SPATIAL = _w(
    "dataset.n_pixels=150 dataset.n_genes=120 dataset.n_types=4 method.sigma_override=100 "
    "method.K_val=100"
)
_TRAIN = _w("bench.warmup_steps=1")
TINY_RUN = {
    "rctd": [*_SPATIAL, "bench.repeats=2"],
    "scvi": _TRAIN
    + _w("dataset.n_cells=300 dataset.n_genes=60 method.max_epochs=2 method.batch_size=64"),
    "cellbender": _TRAIN
    + _w(
        "dataset.n_genes=40 dataset.cells_per_type=20 dataset.n_droplets=300 method.epochs=2 "
        "method.posterior_samples=2"
    ),
    "scbert": _TRAIN
    + _w(
        "dataset.n_genes=30 dataset.n_types=3 dataset.cells_per_type=20 dataset.novel_cells=6 "
        "method.dim=16 method.nb_features=8 method.hidden1=16 method.hidden2=8 "
        "method.epochs_a=1 method.epochs_b=1 method.prune_target=0.1"
    ),
    "cellwhisperer": _TRAIN
    + _w(
        "dataset.n_cells=120 dataset.n_genes=40 method.batch_size=32 method.projection=32 "
        "method.cell_hidden=32 method.text_hidden=32 method.max_tokens=16 method.epochs=1"
    ),
}

TINY = Sizes(
    run=TINY_RUN,
    agree=TINY_RUN,  # the same input: check 2 reuses check 1's device run
    rctd_memory=[*_SPATIAL, "dataset.sparse=true", "bench.repeats=1"],
    cellbender_memory=TINY_RUN["cellbender"],
    judge=_SPATIAL
    + _w("compare.min_pairs=1 compare.max_pairs=1 compare.rounds=1 compare.warm_round=false"),
    planted=3.0,  # one pair of one round must see it on a busy CPU
    loader=[*TINY_RUN["scvi"], "method.staging=stream", "method.chunk_cells=64"],
    loader_workers=(0, 2),
    peer=_w(
        "--n-pixels 150 --n-genes 120 --n-types 4 --modes full --sigma shared --shared-sigma 100"
    ),
    # toy sizes: a second thread only waits (measured on the busy 2-core VM: a CellWhisperer toy
    # training 11 s with two threads, 0.3 s with one)
    threads=1,
)
