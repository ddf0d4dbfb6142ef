"""Write a finished benchmark to its sinks: the MLflow run (when enabled) and the results.tsv
row — the row always, even when tracking fails."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

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


def _lock(uri: str) -> Any:
    path = sqlite_lock_path(uri)
    return locked(path, timeout_s=600) if path else contextlib.nullcontext()


def run_name(bench: Benchmark) -> str:
    """What a run was: method · dataset · hardware · short commit (· its overrides in a sweep,
    the swept keys first: they tell the sweep's jobs apart)."""
    parts = [bench.method_cfg.name, bench.dataset_cfg.name, bench.top.hardware.name,
             bench.env["commit"][:7] or "nogit"]  # fmt: skip
    if bench.sweep_id:
        key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
        named = [o for o in bench.overrides
                 if key(o).startswith(("method.", "dataset.", "bench.", "hardware."))]  # fmt: skip
        swept = [o for o in bench.overrides if key(o) in bench.swept]
        parts += list(dict.fromkeys([*swept, *named]))[:5]
    return " · ".join(parts)


def open_live(bench: Benchmark) -> Any:
    """A RUNNING MLflow run for a trainer, streaming its series (None if MLflow fails now: the
    final record retries and reports)."""
    from harness.sinks.mlflow_run import LiveRun, open_run

    uri = tracking_uri(bench)
    try:
        with _lock(uri):
            run_id = open_run(
                uri, bench.top.tracking.experiment or bench.method_cfg.name, run_name(bench),
                int(bench.started.timestamp() * 1000), _artifacts(bench, uri),
                {"status": "running", "timing": bench.spec.TIMING},
            )  # fmt: skip
    except Exception:
        return None
    return LiveRun(uri, run_id, bench.top.tracking.live_interval_s, lambda: _lock(uri))


def _artifacts(bench: Benchmark, uri: str) -> Any:
    return bench.results / "mlartifacts" if uri.startswith("sqlite") else None


def write(bench: Benchmark, outcome: Outcome) -> None:
    """MLflow run first (its id goes into the row), then the results.tsv row."""
    if bench.top.tracking.mlflow:
        uri = tracking_uri(bench)
        try:
            if bench.live is not None:
                bench.live.close()
            with _lock(uri):
                outcome.mlflow_run_id = log_mlflow(bench, outcome, uri)
        except Exception as exc:  # the row must not be lost because tracking failed
            first = " ".join(str(exc).split())[:200]
            outcome.error = outcome.error or (
                f"MLflow logging to {uri} failed ({type(exc).__name__}: {first}); the "
                "results.tsv row is written without an mlflow_run_id (many concurrent jobs need "
                "a shared tracking server: tracking.uri=http://<host>:5000)"
            )
    append_row(bench.results / "results.tsv", row(bench, outcome))


def headline(names: tuple[str, ...], metrics: dict[str, float]) -> str:
    """``name=value`` of the first of the method's headline metrics it reported ("" if none)."""
    for name in names:
        if name in metrics:
            return f"{name}={float(metrics[name]):.4g}"
    return ""


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
        "quality": headline(bench.spec.QUALITY, o.metrics),
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
        streamed = bench.live is not None and not bench.live.errors
        series = {
            "run_elapsed_s": list(enumerate(m.elapsed)),
            "warmup_elapsed_s": list(enumerate(m.warmup_s)),
            **({} if streamed else m.result.series_by_key()),
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
    finished = bench.finished or bench.started
    return log_run(
        uri=uri,
        experiment=bench.top.tracking.experiment or bench.method_cfg.name,
        run_name=run_name(bench),
        params=flatten(resolved),
        metrics=metrics,
        tags=tags,
        series=series,
        texts={
            "config.yaml": OmegaConf.to_yaml(bench.raw, resolve=True),
            "run.log": bench.reporter.text(),
        },
        status=status,
        artifact_root=_artifacts(bench, uri),
        start_ms=int(bench.started.timestamp() * 1000),
        end_ms=int(finished.timestamp() * 1000),
        run_id=bench.live.run_id if bench.live is not None else None,
    )
