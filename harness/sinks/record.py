"""Write a finished benchmark to its sinks: the MLflow run (when enabled) and the results.tsv
row — the row always, even when tracking fails."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from harness.core.errors import print_error
from harness.core.fsio import locked
from harness.sinks.results_tsv import append_row

if TYPE_CHECKING:
    from harness.bench.runner import Benchmark, Outcome


def tracking_uri(bench: Benchmark) -> str:
    from harness.sinks.mlflow_run import default_uri

    return (
        bench.top.tracking.uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_uri(bench.results)
    )


def sqlite_lock_path(uri: str) -> str | None:
    """The lock file beside a sqlite MLflow store (None for other URIs).

    Concurrent jobs (a multirun, SLURM array tasks) writing one sqlite file fail: sqlite has a
    single writer, and two jobs creating a new database race in MLflow's schema migration.
    Other URIs (a tracking server, a database server) need no lock.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return uri.removeprefix("sqlite:///").split("?", 1)[0] + ".lock"


def write(bench: Benchmark, outcome: Outcome) -> None:
    """MLflow run first (its id goes into the row), then the results.tsv row."""
    if bench.top.tracking.mlflow:
        uri = tracking_uri(bench)
        try:
            lock = sqlite_lock_path(uri)
            if lock:
                with locked(lock, timeout_s=600):
                    outcome.mlflow_run_id = log_mlflow(bench, outcome, uri)
            else:
                outcome.mlflow_run_id = log_mlflow(bench, outcome, uri)
        except Exception as exc:  # the row must not be lost because tracking failed
            outcome.error = outcome.error or f"MLflow logging failed: {exc}"
            print_error(
                f"MLflow logging to {uri} failed ({type(exc).__name__}: {exc}); the "
                "results.tsv row is written without an mlflow_run_id. Many concurrent jobs need "
                "a shared tracking server: tracking.uri=http://<host>:5000"
            )
    append_row(bench.results / "results.tsv", row(bench, outcome))


def row(bench: Benchmark, o: Outcome) -> dict[str, Any]:
    m = o.measurement if o.measurement and o.measurement.elapsed else None
    top = bench.top
    return {
        "timestamp": bench.started.isoformat(timespec="seconds"),
        "commit": bench.env["commit"][:12],
        "branch": bench.env["branch"],
        "dirty": int(bench.env["dirty"]),
        "method": bench.method_cfg.name,
        "dataset": bench.dataset_cfg.name,
        "hardware": top.hardware.name,
        "device": bench.env["device_name"],
        "timing": bench.spec.TIMING,
        "elapsed_s": m.median if m else None,
        "elapsed_min": m.min if m else None,
        "elapsed_iqr": m.iqr if m else None,
        "n_runs": len(m.samples) if m else 0,
        "warmup_s": sum(o.measurement.warmup_s) if o.measurement else None,
        "peak_mem_mb": round(o.measurement.peak_mem_mb, 1) if m else None,
        "output_hash": o.output_hash,
        "verdict": o.verdict,
        "status": o.status,
        "resumed": o.tags.get("resumed", ""),
        "tag": " ".join(filter(None, [top.run.tag, bench.sweep_id and f"sweep:{bench.sweep_id}"])),
        "description": top.run.description or o.error,
        "overrides": " ".join(bench.overrides),
        "mlflow_run_id": o.mlflow_run_id,
    }


def log_mlflow(bench: Benchmark, o: Outcome, uri: str) -> str:
    from harness.sinks.mlflow_run import flatten, log_run

    m = o.measurement
    metrics: dict[str, float] = dict(o.metrics)
    series: dict[str, list[tuple[int, float]]] = {}
    if m and m.elapsed:
        metrics.update(
            elapsed_s=m.median,
            elapsed_min=m.min,
            elapsed_iqr=m.iqr,
            n_runs=len(m.samples),
            warmup_s=sum(m.warmup_s),
            peak_mem_mb=m.peak_mem_mb,
        )
        series = {
            "run_elapsed_s": list(enumerate(m.elapsed)),
            "warmup_elapsed_s": list(enumerate(m.warmup_s)),
            **m.result.series_by_key(),
        }
    env = bench.env
    tags = {
        **{f"env.{k}": v for k, v in env.items()},
        "commit": env["commit"],
        "branch": env["branch"],
        "dirty": env["dirty"],
        "output_hash": o.output_hash,
        "verdict": o.verdict,
        "status": o.status,
        "timing": bench.spec.TIMING,
        "hardware": bench.top.hardware.name,
        "dataset": bench.dataset_cfg.name,
        "device_name": env["device_name"],
        "overrides": " ".join(bench.overrides),
        "mlflow.note.content": bench.top.run.description,
        **o.tags,
    }
    if bench.top.run.tag:
        tags["tag"] = bench.top.run.tag
    if bench.sweep_id:
        tags["sweep_id"] = bench.sweep_id
    if o.error:
        tags["error"] = o.error
    resolved = OmegaConf.to_container(bench.raw, resolve=True)
    status = {"crash": "FAILED", "timeout": "KILLED"}.get(o.status, "FINISHED")
    return log_run(
        uri=uri,
        experiment=bench.top.tracking.experiment or bench.method_cfg.name,
        run_name=f"{bench.method_cfg.name}-{bench.dataset_cfg.name}-{bench.top.hardware.name}",
        params=flatten(resolved),
        metrics=metrics,
        tags=tags,
        series=series,
        texts={
            "config.yaml": OmegaConf.to_yaml(bench.raw, resolve=True),
            "run.log": bench.reporter.text(),
        },
        status=status,
        artifact_root=bench.results / "mlartifacts" if uri.startswith("sqlite") else None,
    )
