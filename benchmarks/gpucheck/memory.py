"""Check 3: the memory models on the device, measured peak against the prediction.

- RCTD ``method.batch_size=auto`` (``methods/rctd/memory.py``): the batch the method picks
  from the free memory (CUDA ``mem_get_info``; on a CPU ``MemAvailable``), and the peak of the
  full-mode fit (``solve_irwls``) against the footprint model for that batch; then a
  ``method.memory_gb`` cap sized for a quarter of the pixels: a smaller batch, the same hash.
- CellBender's posterior (``posterior_batch=auto``, ``methods/cellbender/memory.py``): the batch
  it picks and the peak of ``noise_posterior`` against the batch model for the batch that held
  the most counts (on a GPU the kept posterior is on the host: the device holds the batches).

The method runs in this process (``harness.api.prepared``, then one run as the harness times
it); the measured functions are wrapped where the method module imported them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from gpucheck.common import INFO, OK, WARN, Pack, Row, device_peak, free_memory, guarded, mb

SMALL_MB = 256  # below this a CPU's resident high-water mark is mostly allocator noise


@contextlib.contextmanager
def measured(module: Any, name: str, device: Any, calls: list[dict]) -> Iterator[None]:
    """Wrap ``module.name``: each call's arguments and device peak go to ``calls``."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with device_peak(device) as peak:
            out = original(*args, **kwargs)
        calls.append({"args": args, "kwargs": kwargs, "peak": peak.bytes, "source": peak.source})
        return out

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def _run_once(pack: Pack, overrides: list[str], wrap: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Prepare (untimed), one run under ``wrap(device)``; (the prepared benchmark, result)."""
    from harness.api import prepared
    from harness.bench.contract import RunContext
    from harness.bench.protocol import timed_call

    args = [*pack.common(), *overrides]
    print(f"--- prepared: {' '.join(args)}", file=pack.log, flush=True)
    with contextlib.redirect_stderr(pack.log):
        ready = prepared(args)
    with wrap(ready.runtime.device), contextlib.redirect_stderr(pack.log):
        _, _, result = timed_call(
            lambda c: ready.method.run(ready.state, c), ready.runtime, RunContext()
        )
    return ready, result


def _digest(ready: Any, outputs: dict[str, Any]) -> str:
    from harness.bench.hashing import output_hash, select

    names = select(outputs, ready.config.method.hashed_outputs)
    return output_hash(outputs, ready.config.top.bench.hash_decimals, names)


def _rctd(pack: Pack, row: Row, cap_gb: float | None, found: dict) -> None:
    import torch

    from methods.rctd import memory
    from methods.rctd import method as rctd_method
    from methods.rctd.solver import tile_elems

    extra = ["method.batch_size=auto"] + ([f"method.memory_gb={cap_gb:.9f}"] if cap_gb else [])
    calls: list[dict] = []
    free = {}

    def wrap(device: Any) -> Any:
        free["bytes"] = free_memory(device)
        return measured(rctd_method, "solve_irwls", device, calls)

    ready, result = _run_once(pack, ["method=rctd", *pack.sizes.rctd_memory, *extra], wrap)
    call = calls[-1]  # the full-mode fit (sigma is fixed: the only call)
    y, prof = call["args"][0], call["args"][2]
    n, g = y.shape
    k = prof.shape[1]
    itemsize = torch.empty((), dtype=prof.dtype).element_size()
    batch = int(call["kwargs"]["batch_size"])
    dev = ready.runtime.device
    predicted = min(batch, n) * memory.row_bytes(g, k, itemsize) + memory.fixed_bytes(
        tile_elems(dev), itemsize
    )
    ratio = call["peak"] / predicted
    found.update(n=n, g=g, k=k, itemsize=itemsize, tile=tile_elems(dev),
                 hash=_digest(ready, result.outputs))  # fmt: skip
    row.figures.update(
        free_mb=mb(cap_gb * 2**30 if cap_gb else free["bytes"]),
        pixels=n,
        batch=batch,
        predicted_mb=mb(predicted),
        measured_mb=mb(call["peak"]),
        measured_over_predicted=round(ratio, 3),
        hash=found["hash"],
    )
    row.note = call["source"]
    if predicted < SMALL_MB * 2**20 and dev.type == "cpu":
        row.status, row.note = INFO, row.note + f"; model below {SMALL_MB} MB: not judged"
    else:
        row.status = OK if ratio <= 1.0 else WARN
        row.note += "" if ratio <= 1.0 else "; the model under-predicts"


def check_memory(pack: Pack) -> list[Row]:
    """Check 3 (module doc)."""
    from methods.rctd import memory

    rows: list[Row] = []
    found: dict[str, Any] = {}
    guarded(pack, rows, Row("memory", "rctd", "batch_size=auto", pack.device),
            lambda row: _rctd(pack, row, None, found))  # fmt: skip

    def capped(row: Row) -> None:
        if not found:
            raise RuntimeError("the auto run failed")
        f = dict(found)
        row_b = memory.row_bytes(f["g"], f["k"], f["itemsize"])  # + half a row: no round-off
        room = memory.fixed_bytes(f["tile"], f["itemsize"]) + (f["n"] // 4 + 0.5) * row_b
        _rctd(pack, row, room / memory.FRACTION / 2**30, found)
        same = found["hash"] == f["hash"]
        row.figures["same_hash"] = same
        if not same:
            row.status, row.note = WARN, row.note + "; outputs changed with the batch"

    guarded(pack, rows, Row("memory", "rctd", "memory_gb cap (1/4 of pixels)", pack.device),
            capped)  # fmt: skip
    guarded(pack, rows, Row("memory", "cellbender", "posterior", pack.device),
            lambda row: _cellbender(pack, row))  # fmt: skip
    return rows


def _cellbender(pack: Pack, row: Row) -> None:
    import torch

    from methods.cellbender import memory as cb_memory
    from methods.cellbender import method as cb_method

    calls: list[dict] = []
    free = {}

    def wrap(device: Any) -> Any:
        free["bytes"] = free_memory(device)
        return measured(cb_method, "noise_posterior", device, calls)

    ready, _ = _run_once(pack, ["method=cellbender", *pack.sizes.cellbender_memory], wrap)
    call = calls[-1]  # the timed run's posterior
    _, staged, cells, n_samples, window = call["args"][:5]
    batch = int(call["kwargs"]["batch"])
    itemsize = torch.empty((), dtype=staged.dtype).element_size()
    n_genes = int(ready.state.genes.size)
    predicted = 0  # the model for the batch that held the most counts
    for lo in range(0, len(cells), batch):
        x, _, _ = staged.rows(cells[lo : lo + batch])
        entries = int((x > 0).sum())
        predicted = max(predicted, cb_memory.batch_bytes(
            x.shape[0], entries, n_genes, n_samples, window, itemsize))  # fmt: skip
    ratio = call["peak"] / max(predicted, 1)
    row.figures.update(
        free_mb=mb(free["bytes"]),
        droplets=len(cells),
        batch=batch,
        predicted_mb=mb(predicted),
        measured_mb=mb(call["peak"]),
        measured_over_predicted=round(ratio, 3),
    )
    row.note = (
        f"{call['source']}; posterior_batch=auto (methods/cellbender/memory.py: at most 128 "
        "cells); predicted = batch_bytes of the batch with the most counts"
    )
    if predicted < SMALL_MB * 2**20 and staged.device.type == "cpu":
        row.status, row.note = INFO, row.note + f"; model below {SMALL_MB} MB: not judged"
    else:
        row.status = OK if ratio <= 1.0 else WARN
        row.note += "" if ratio <= 1.0 else "; the model under-predicts"
