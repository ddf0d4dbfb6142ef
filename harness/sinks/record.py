"""Write a run's record (:class:`~harness.sinks.runrecord.RunRecord`) to its sinks: the MLflow
run (when enabled) and the results.tsv row — the row always, even when tracking fails."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from harness.core.fsio import locked
from harness.sinks.results_tsv import append_row
from harness.sinks.runrecord import Identity, RunRecord, Tracking


def tracking_uri(configured: str | None, results: Path) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the sqlite file in ``results``."""
    from harness.sinks.mlflow_run import default_uri

    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(results)


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


def run_name(who: Identity) -> str:
    """What a run was, its distinct part first (the runs table cuts long names): in a sweep the
    swept values (``max_iter=20``, the key's last part), then method · dataset · hardware · short
    commit (· the sweep's other method/dataset/bench/hardware overrides)."""
    parts = [who.method, who.dataset, who.hardware, who.commit[:7] or "nogit"]
    if not who.sweep_id:
        return " · ".join(parts)
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
    swept = [o for o in who.overrides if key(o) in who.swept]
    short = [f"{key(o).rsplit('.', 1)[-1]}={o.split('=', 1)[1]}" for o in swept if "=" in o]
    named = [o for o in who.overrides if o not in swept
             and key(o).startswith(("method.", "dataset.", "bench.", "hardware."))]  # fmt: skip
    return " · ".join([*short, *parts, *named][: len(short) + len(parts) + 3])


def open_live(rec: RunRecord) -> Any:
    """A RUNNING MLflow run for a trainer, streaming its series (None if MLflow fails now: the
    final record retries and reports). The caller hands it back to :func:`write`."""
    from harness.sinks.mlflow_run import LiveRun, open_run

    t, who = rec.tracking, rec.identity
    try:
        with _lock(t.uri):
            run_id = open_run(
                t.uri, t.experiment, run_name(who), int(who.started.timestamp() * 1000),
                _artifacts(t), {"status": "running", "timing": who.timing}, who.quality,
            )  # fmt: skip
    except Exception:
        return None
    return LiveRun(t.uri, run_id, t.live_interval_s, lambda: _lock(t.uri))


def _view_url(uri: str, run_id: str) -> str:
    """The link to the run's experiment in MLflow's training view ("" if the store says no)."""
    from harness.sinks.mlflow_run import _client
    from harness.sinks.mlflow_view import training_view_url

    try:
        return training_view_url(uri, _client(uri).get_run(run_id).info.experiment_id)
    except Exception:  # a link is a convenience: never fail a record for it
        return ""


def _artifacts(t: Tracking) -> Any:
    return t.results / "mlartifacts" if t.uri.startswith("sqlite") else None


def write(rec: RunRecord, live: Any = None) -> None:
    """MLflow run first (its id goes into the row and ``rec.mlflow_run_id``), then the
    results.tsv row. ``live``: the run :func:`open_live` opened, ended here."""
    if rec.tracking.enabled:
        uri = rec.tracking.uri
        try:
            if live is not None:
                live.close()
            with _lock(uri):
                rec.mlflow_run_id = log_mlflow(rec, live)
                rec.mlflow_url = _view_url(uri, rec.mlflow_run_id)
        except Exception as exc:  # the row must not be lost because tracking failed
            first = " ".join(str(exc).split())[:200]
            if live is not None:  # opened live, then logging failed: FAILED, not RUNNING
                from harness.sinks.mlflow_run import fail_run

                fail_run(uri, live.run_id, f"logging failed: {type(exc).__name__}: {first}")
            busy = any(w in first.lower() for w in ("locked", "timeout", "timed out"))
            hint = (  # only a store shared by many jobs is helped by a server
                " (many concurrent jobs need a shared tracking server: "
                "tracking.uri=http://<host>:5000)"
                if busy
                else ""
            )
            rec.error = rec.error or (
                f"MLflow logging to {uri} failed ({type(exc).__name__}: {first}); the "
                f"results.tsv row is written without an mlflow_run_id{hint}"
            )
    append_row(rec.tracking.results / "results.tsv", row(rec))


def headline(names: tuple[str, ...], metrics: dict[str, float]) -> str:
    """``name=value`` of the first of the method's headline metrics it reported ("" if none)."""
    for name in names:
        if name in metrics:
            return f"{name}={float(metrics[name]):.4g}"
    return ""


def row(rec: RunRecord) -> dict[str, Any]:
    """The record as one results.tsv row."""
    who, m = rec.identity, rec.timings
    m = m if m and m.elapsed else None
    return {
        "timestamp": who.started.isoformat(timespec="seconds"),
        "commit": who.commit[:12],
        "branch": who.branch,
        "dirty": int(who.dirty),
        "method": who.method,
        "dataset": who.dataset,
        "hardware": who.hardware,
        "device": who.device_name,
        "timing": who.timing,
        "elapsed_s": m.median if m else None,
        "elapsed_min": m.min if m else None,
        "elapsed_iqr": m.iqr if m else None,
        "n_runs": m.n_samples if m else 0,
        "warmup_s": sum(rec.timings.warmup_s) if rec.timings else None,
        "peak_mem_mb": round(m.peak_mem_mb, 1) if m else None,
        "output_hash": rec.output_hash,
        "verdict": rec.verdict,
        "quality": headline(who.quality, rec.metrics),
        "status": rec.status,
        "resumed": rec.tags.get("resumed", ""),
        "tag": " ".join(filter(None, [who.tag, who.sweep_id and f"sweep:{who.sweep_id}"])),
        "description": who.description or rec.error,
        "overrides": " ".join(who.overrides),
        "mlflow_run_id": rec.mlflow_run_id,
    }


def log_mlflow(rec: RunRecord, live: Any = None) -> str:
    """The record as an MLflow run (ending the ``live`` one when a trainer streamed into it)."""
    from harness.sinks.mlflow_run import flatten, log_run

    who, m, env = rec.identity, rec.timings, rec.environment
    metrics: dict[str, float] = dict(rec.metrics)
    series: dict[str, list[tuple[int, float]]] = {}
    if m and m.elapsed:
        metrics.update(
            elapsed_s=m.median,
            elapsed_min=m.min,
            elapsed_iqr=m.iqr,
            n_runs=m.n_samples,
            warmup_s=sum(m.warmup_s),
            peak_mem_mb=m.peak_mem_mb,
        )
        streamed = live is not None and not live.errors
        series = {
            "run_elapsed_s": list(enumerate(m.elapsed)),
            "warmup_elapsed_s": list(enumerate(m.warmup_s)),
            **({} if streamed else m.series),
        }
    tags = {
        **{f"env.{k}": v for k, v in env.items()},
        "commit": who.commit,
        "branch": who.branch,
        "dirty": who.dirty,
        "output_hash": rec.output_hash,
        "verdict": rec.verdict,
        "status": rec.status,
        "timing": who.timing,
        "hardware": who.hardware,
        "dataset": who.dataset,
        "device_name": who.device_name,
        "overrides": " ".join(who.overrides),
        "mlflow.note.content": who.description,
        **rec.tags,
    }
    if who.tag:
        tags["tag"] = who.tag
    if who.sweep_id:
        tags["sweep_id"] = who.sweep_id
    if rec.error:
        tags["error"] = rec.error
    status = {"crash": "FAILED", "timeout": "KILLED", "killed": "KILLED"}.get(
        rec.status, "FINISHED"
    )
    finished = rec.finished or who.started
    return log_run(
        uri=rec.tracking.uri,
        experiment=rec.tracking.experiment,
        run_name=run_name(who),
        params=flatten(rec.config),
        metrics=metrics,
        tags=tags,
        series=series,
        texts={"config.yaml": rec.config_yaml, "run.log": rec.log},
        status=status,
        artifact_root=_artifacts(rec.tracking),
        start_ms=int(who.started.timestamp() * 1000),
        end_ms=int(finished.timestamp() * 1000),
        run_id=live.run_id if live is not None else None,
        headline=who.quality,
    )
