"""Checks 1 and 2: every method on the device, and the device against the CPU.

1. ``methods``: a baseline run with the hardware profile (the method's default dtype), stored
   as the device's baseline (``bench.baseline=save``); a rerun judged against it (run-to-run
   stability: a ``bitwise`` method must hash the same, a ``statistical`` one be ``exact`` or
   ``close``); then the variants the method and profile allow, each judged against the same
   baseline: ``float32`` (when the default is another dtype), ``bf16`` autocast (when the
   method declares it) and ``torch.compile`` (when the profile or ``--compile`` turns it on).
2. ``device-vs-cpu``: the same input on the device and on the CPU (``hardware=cpu``), the CPU
   outputs judged against the device's by the harness's verdict (work counters, hash, then the
   method's own tolerance check).
"""

from __future__ import annotations

import functools
from typing import Any

from gpucheck.common import FAIL, OK, WARN, Pack, Row, Run, guarded, run_bench
from gpucheck.sizes import METHODS

ACCEPT = ("exact", "close")


def _stability(spec: Any, base: Run, again: Run) -> tuple[bool, str]:
    """Whether a rerun reproduces the baseline as the method's determinism demands."""
    verdict = again.outcome.verdict
    if spec.DETERMINISM == "bitwise":
        same = again.outcome.output_hash == base.outcome.output_hash and verdict == "exact"
        return same, "bitwise: same hash" if same else f"bitwise: {verdict}, hashes differ"
    ok = verdict in ACCEPT
    return ok, f"statistical: {verdict}"


def _variants(pack: Pack, base: Run) -> list[tuple[str, list[str], str]]:
    """(name, overrides, status when not accepted) of the variants this method runs."""
    spec, out = base.bench.spec, []
    if base.bench.method_cfg.dtype != "float32" and "float32" in pack.variants:
        out.append(("float32", ["hardware.dtype=float32"], FAIL))
    if "bf16" in spec.AUTOCAST and "bf16" in pack.variants:
        # a declared precision the method's tolerance rejects is a finding, not a crash
        out.append(("bf16 autocast", ["method.autocast=bf16"], WARN))
    if "compile" in pack.variants and not base.bench.top.hardware.compile:
        out.append(("torch.compile", ["hardware.compile=true"], FAIL))
    return out


def _judged(pack: Pack, args: list[str], bad: str, row: Row) -> None:
    """A variant run, judged against the stored device baseline."""
    run = run_bench(pack, [*args, "bench.baseline=compare"])
    row.figures.update(run.figures())
    row.detail = dict(run.outcome.metrics)
    accepted = run.outcome.verdict in ACCEPT
    row.status = OK if accepted else bad
    row.note = "vs the baseline" + ("" if accepted else ": outside the tolerance")


def check_methods(pack: Pack, names: tuple[str, ...] = METHODS) -> tuple[list[Row], dict]:
    """Check 1 (module doc); returns the rows and each method's baseline and rerun runs."""
    rows: list[Row] = []
    done: dict[str, dict[str, Run]] = {}
    for name in names:
        base_args = [f"method={name}", *pack.sizes.run[name]]
        runs = done[name] = {}

        def baseline(row: Row, args: list[str] = base_args, runs: dict = runs) -> None:
            runs["base"] = base = run_bench(pack, [*args, "bench.baseline=save"])
            row.variant = f"baseline ({base.bench.method_cfg.dtype})"
            row.figures.update(base.figures())
            row.note = f"{base.bench.spec.DETERMINISM}; wall {base.wall_s:.1f} s"
            if base.outcome.verdict == "nondeterministic":
                row.status, row.note = FAIL, "bitwise method: its runs hashed differently"

        guarded(pack, rows, Row("methods", name, "baseline", pack.device), baseline)
        if "base" not in runs:
            continue
        base = runs["base"]

        def rerun(
            row: Row, args: list[str] = base_args, base: Run = base, runs: dict = runs
        ) -> None:
            again = runs["rerun"] = run_bench(pack, [*args, "bench.baseline=compare"])
            row.figures.update(again.figures())
            stable, row.note = _stability(base.bench.spec, base, again)
            row.figures["stable"] = stable
            row.status = OK if stable else FAIL

        guarded(pack, rows, Row("methods", name, "rerun", pack.device), rerun)
        for variant, extra, bad in _variants(pack, base):
            judge = functools.partial(_judged, pack, [*base_args, *extra], bad)
            guarded(pack, rows, Row("methods", name, variant, pack.device), judge)
    return rows, done


def check_agreement(
    pack: Pack, done: dict[str, dict[str, Run]], names: tuple[str, ...] = METHODS
) -> list[Row]:
    """Check 2 (module doc): the device's outputs are the reference, the CPU's are judged.
    Where check 1 ran the same input, its baseline is the device side; and where the device
    is the CPU (``--device cpu``), its rerun is the CPU side."""
    from harness.bench import baseline as bl

    rows: list[Row] = []
    for name in names:
        args = [f"method={name}", *pack.sizes.agree[name], "bench.baseline=off"]

        def agree(row: Row, name: str = name, args: list[str] = args) -> None:
            prior = done.get(name, {}) if pack.sizes.agree[name] == pack.sizes.run[name] else {}
            dev = prior["base"] if "base" in prior else run_bench(pack, args)
            reuse = pack.device == "cpu" and "rerun" in prior
            cpu = prior["rerun"] if reuse else run_bench(pack, args, hardware="cpu")
            ref = bl.Baseline(dev.outcome.output_hash, dev.m.outputs, {}, dev.m.result.work)
            verdict, metrics = bl.verdict(
                cpu.outcome.output_hash, cpu.m.result, ref, dev.method.compare
            )
            row.figures.update(
                device_s=round(dev.m.median, 4),
                cpu_s=round(cpu.m.median, 4),
                cpu_over_device=round(cpu.m.median / max(dev.m.median, 1e-9), 2),
                device_hash=dev.outcome.output_hash,
                cpu_hash=cpu.outcome.output_hash,
                verdict=verdict,
            )
            row.detail = metrics
            row.status = OK if verdict in ACCEPT else WARN
            row.note = "cpu judged against the device by the method's tolerance"
            if verdict not in ACCEPT:
                row.note = "cpu and device differ beyond the method's tolerance"

        guarded(pack, rows, Row("device-vs-cpu", name, "same input", pack.device), agree)
    return rows
