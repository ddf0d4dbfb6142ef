"""Check 5: scVI's stream loader feeding training on the device (``method.staging=stream``):
training cells per second with each loader worker count (the census lesson: on a GPU the loader,
not the model, can bound the speed). Cells are the work counter ``train_cells`` (counted by the
method's read-only hooks), over the one timed training. The outputs must not depend on the
worker count: every row's hash is compared with the first's."""

from __future__ import annotations

from gpucheck.common import OK, WARN, Pack, Row, guarded, run_bench


def check_loader(pack: Pack) -> list[Row]:
    """Check 5 (module doc)."""
    rows: list[Row] = []
    first: dict[str, str] = {}
    for workers in pack.sizes.loader_workers:

        def one(row: Row, workers: int = workers) -> None:
            args = ["method=scvi", *pack.sizes.loader, f"method.workers={workers}",
                    "bench.baseline=off"]  # fmt: skip
            run = run_bench(pack, args)
            cells = run.outcome.metrics.get("work_train_cells", float("nan"))
            digest = run.outcome.output_hash
            first.setdefault("hash", digest)
            row.figures.update(
                workers=workers,
                elapsed_s=round(run.m.median, 4),
                train_cells=int(cells) if cells == cells else None,
                cells_per_s=round(cells / run.m.median, 1),
                peak_mb=round(run.m.peak_mem_mb, 1),
                hash=digest,
                same_hash=digest == first["hash"],
            )
            row.status = OK if digest == first["hash"] else WARN
            row.note = "" if row.status == OK else "outputs depend on the worker count"

        guarded(pack, rows, Row("loader", "scvi", f"{workers} workers", pack.device), one)
    return rows
