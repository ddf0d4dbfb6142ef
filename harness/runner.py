"""One benchmark, end to end: the data flow of DESIGN.md from a composed config to the sinks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import baseline as baselines
from harness import hardware, validate
from harness.display import Reporter, summary_lines
from harness.errors import UserError
from harness.fingerprint import environment_key, fingerprint
from harness.hashing import parity_hash, weights_hash
from harness.protocol import Measurement, measure
from harness.results_tsv import append_row
from harness.schema import Config


@dataclass
class Outcome:
    """What a benchmark produced, for the sinks and for callers (sweepers, the loop)."""

    status: str
    weights_hash: str = ""
    verdict: str = ""
    measurement: Measurement | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    mlflow_run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


class Benchmark:
    """Validated inputs plus everything needed to write exactly one row for them."""

    def __init__(
        self,
        cfg: DictConfig,
        valid: validate.Validated,
        overrides: list[str],
        reporter: Reporter,
        env: dict[str, Any] | None = None,
    ) -> None:
        self.raw = cfg
        self.overrides = overrides
        self.reporter = reporter
        self.cwd = Path.cwd()
        self.top: Config = valid.top
        self.method_cfg = valid.method
        self.dataset_cfg = valid.dataset
        self.results = (self.cwd / self.top.paths.results).resolve()
        self.runtime = hardware.resolve(
            self.top.hardware,
            self.method_cfg.dtype,
            (self.cwd / self.top.paths.cache).resolve(),
            self.top.bench.seed,
        )
        self.env = env or fingerprint(self.runtime, self.cwd)
        self._lock = threading.Lock()
        self._recorded = False
        # jobs of one sweep share this id (results.tsv tag "sweep:<id>", MLflow tag sweep_id)
        self.sweep_id = os.environ.get("HARNESS_SWEEP_ID", "")
        self.started = datetime.now(timezone.utc)

    # ---- the data flow -------------------------------------------------------------------
    def load(self) -> Any:
        """The dataset's AnnData objects (``dataset._target_`` called with its config)."""
        self.reporter.info(f"dataset {self.dataset_cfg.name}: loading")
        loader = validate.locate(self.dataset_cfg._target_, "dataset._target_")
        return loader(self.dataset_cfg)

    def setup(self, data: Any = None) -> tuple[Any, Any, Any]:
        """Load the dataset (unless given), build and check the method, prepare it (untimed)."""
        mc, say = self.method_cfg, self.reporter.info
        data = self.load() if data is None else data
        method_cls = validate.locate(mc._target_, "method._target_")
        method = method_cls(mc, self.runtime)
        method.check_inputs(data)
        say(f"method {mc.name}: prepare on {self.runtime.device} ({self.env['device_name']})")
        t0 = time.perf_counter()
        state = method.prepare(data)
        self.runtime.synchronize()
        say(f"prepare done in {time.perf_counter() - t0:.2f} s")
        return method, data, state

    def digest(self, outputs: Any) -> str:
        """The canonical hash of a run's (host) outputs."""
        names = self.method_cfg.hashed_outputs or None
        return weights_hash(outputs, self.top.bench.hash_decimals, names)

    def execute(self, data: Any = None) -> Outcome:
        """Load → prepare → warmup → timed runs → hash → verdict. Never writes anything."""
        method, data, state = self.setup(data)
        bench = self.top.bench
        m = measure(
            lambda: method.run(state),
            self.runtime,
            bench.warmup,
            bench.repeats,
            self.digest,
            self.reporter,
        )
        return self.conclude(method, data, m)

    def conclude(self, method: Any, data: Any, m: Measurement) -> Outcome:
        """Quality metrics, optional output file, parity hash and verdict of a measurement."""
        mc = self.method_cfg
        outcome = Outcome(status=self.top.run.status, measurement=m, weights_hash=m.hashes[-1])
        outcome.metrics.update(method.quality(m.outputs, data))
        if hasattr(method, "series"):  # per-step metrics of the last run (e.g. per epoch)
            outcome.series.update(method.series())
        if self.top.run.output:
            if not hasattr(method, "write_output"):
                raise UserError(f"run.output: method {mc.name} does not write output files")
            path = (self.cwd / self.top.run.output).resolve()
            method.write_output(m.outputs, data, path)
            self.reporter.info(f"output written: {path}")
        if mc.parity_output and mc.parity_output in m.outputs:
            outcome.tags["parity_hash"] = parity_hash(m.outputs[mc.parity_output])
        self._judge(outcome, method)
        return outcome

    def _baseline_path(self) -> Path:
        dataset_tree = OmegaConf.to_container(self.raw.dataset, resolve=True)
        task = {k: getattr(self.method_cfg, k, None) for k in self.method_cfg.baseline_keys}
        key = baselines.BaselineKey(
            method=self.method_cfg.name,
            method_params=baselines.short_hash(task) if task else "",
            dataset=self.dataset_cfg.name,
            dataset_params=baselines.short_hash(dataset_tree),
            hardware=self.top.hardware.name,
            environment=baselines.short_hash(environment_key(self.env)),
        )
        return key.path((self.cwd / self.top.paths.baselines).resolve())

    def _judge(self, outcome: Outcome, method: Any) -> None:
        m, mode = outcome.measurement, self.top.bench.baseline
        assert m is not None
        if not m.deterministic:
            outcome.verdict = "nondeterministic"
            self.reporter.info(
                f"hashes differ between runs: {sorted(set(m.hashes + m.warmup_hashes))}"
            )
            return
        if mode == "off":
            outcome.verdict = "none"
            return
        path = self._baseline_path()
        stored = None if mode == "save" else baselines.load(path)
        if stored is None and mode in ("save", "auto"):
            meta = {"commit": self.env["commit"], "created": self.started.isoformat()}
            baselines.save(path, outcome.weights_hash, m.outputs, meta)
            outcome.verdict = "none"
            if outcome.status == "run":
                outcome.status = "baseline"
            self.reporter.info(f"baseline saved: {path}")
            return
        verdict, metrics = baselines.verdict(
            outcome.weights_hash, m.outputs, stored, method.compare
        )
        outcome.verdict = verdict
        outcome.metrics.update({f"cmp_{k}": v for k, v in metrics.items()})

    # ---- sinks ---------------------------------------------------------------------------
    def record(self, outcome: Outcome) -> bool:
        """Write the MLflow run and the results.tsv row, once. False if already recorded."""
        with self._lock:
            if self._recorded:
                return False
            self._recorded = True
        if self.top.tracking.mlflow:
            try:
                with _sqlite_writer_lock(self._uri()):
                    outcome.mlflow_run_id = self._log_mlflow(outcome)
            except Exception as exc:  # the row must not be lost because tracking failed
                outcome.error = outcome.error or f"MLflow logging failed: {exc}"
                print(
                    f"error: MLflow logging to {self._uri()} failed ({type(exc).__name__}: {exc});"
                    " the results.tsv row is written without an mlflow_run_id. Many concurrent"
                    " jobs need a shared tracking server: tracking.uri=http://<host>:5000",
                    file=sys.stderr,
                )
        append_row(self.results / "results.tsv", self._row(outcome))
        return True

    def _uri(self) -> str:
        from harness.tracking import default_uri

        return (
            self.top.tracking.uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or default_uri(self.results)
        )

    def _row(self, o: Outcome) -> dict[str, Any]:
        m = o.measurement if o.measurement and o.measurement.elapsed else None
        return {
            "timestamp": self.started.isoformat(timespec="seconds"),
            "commit": self.env["commit"][:12],
            "branch": self.env["branch"],
            "dirty": int(self.env["dirty"]),
            "method": self.method_cfg.name,
            "dataset": self.dataset_cfg.name,
            "hardware": self.top.hardware.name,
            "device": self.env["device_name"],
            "elapsed_s": m.median if m else None,
            "elapsed_min": m.min if m else None,
            "elapsed_iqr": m.iqr if m else None,
            "n_runs": len(m.elapsed) if m else 0,
            "warmup_s": sum(o.measurement.warmup_s) if o.measurement else None,
            "peak_mem_mb": round(o.measurement.peak_mem_mb, 1) if m else None,
            "weights_hash": o.weights_hash,
            "verdict": o.verdict,
            "status": o.status,
            "tag": " ".join(
                filter(None, [self.top.run.tag, self.sweep_id and f"sweep:{self.sweep_id}"])
            ),
            "description": self.top.run.description or o.error,
            "overrides": " ".join(self.overrides),
            "mlflow_run_id": o.mlflow_run_id,
        }

    def _log_mlflow(self, o: Outcome) -> str:
        from harness.tracking import flatten, log_run

        m = o.measurement
        metrics: dict[str, float] = dict(o.metrics)
        series: dict[str, list[float]] = {}
        if m and m.elapsed:
            metrics.update(
                elapsed_s=m.median,
                elapsed_min=m.min,
                elapsed_iqr=m.iqr,
                n_runs=len(m.elapsed),
                warmup_s=sum(m.warmup_s),
                peak_mem_mb=m.peak_mem_mb,
            )
            series = {"run_elapsed_s": m.elapsed, "warmup_elapsed_s": m.warmup_s, **o.series}
        tags = {
            **{f"env.{k}": v for k, v in self.env.items()},
            "commit": self.env["commit"],
            "branch": self.env["branch"],
            "dirty": self.env["dirty"],
            "weights_hash": o.weights_hash,
            "verdict": o.verdict,
            "status": o.status,
            "hardware": self.top.hardware.name,
            "dataset": self.dataset_cfg.name,
            "device_name": self.env["device_name"],
            "overrides": " ".join(self.overrides),
            "mlflow.note.content": self.top.run.description,
            **o.tags,
        }
        if self.top.run.tag:
            tags["tag"] = self.top.run.tag
        if self.sweep_id:
            tags["sweep_id"] = self.sweep_id
        if o.error:
            tags["error"] = o.error
        resolved = OmegaConf.to_container(self.raw, resolve=True)
        status = {"crash": "FAILED", "timeout": "KILLED"}.get(o.status, "FINISHED")
        return log_run(
            uri=self._uri(),
            experiment=self.top.tracking.experiment or self.method_cfg.name,
            run_name=f"{self.method_cfg.name}-{self.dataset_cfg.name}-{self.top.hardware.name}",
            params=flatten(resolved),
            metrics=metrics,
            tags=tags,
            series=series,
            texts={
                "config.yaml": OmegaConf.to_yaml(self.raw, resolve=True),
                "run.log": self.reporter.text(),
            },
            status=status,
            artifact_root=self.results / "mlartifacts"
            if self._uri().startswith("sqlite")
            else None,
        )

    def summary(self, o: Outcome) -> str:
        m = o.measurement
        fields: list[tuple[str, Any]] = [
            ("method", f"{self.method_cfg.name}  dataset {self.dataset_cfg.name}"),
            (
                "hardware",
                f"{self.top.hardware.name}  ({self.env['device_name']}, {self.env['dtype']})",
            ),
            (
                "commit",
                f"{self.env['commit'][:12] or '-'}{' (dirty)' if self.env['dirty'] else ''}",
            ),
        ]
        if m and m.elapsed:
            fields += [
                (
                    "elapsed_s",
                    f"{m.median:.4f}  (min {m.min:.4f}, IQR {m.iqr:.4f}, n {len(m.elapsed)})",
                ),
                ("warmup_s", f"{sum(m.warmup_s):.4f}"),
                ("peak_mem_mb", f"{m.peak_mem_mb:.1f}"),
            ]
        fields += [
            ("weights_hash", o.weights_hash or "-"),
            ("verdict", o.verdict or "-"),
            ("status", o.status),
        ]
        fields += [(k, f"{v:.6g}") for k, v in sorted(o.metrics.items())]
        if o.mlflow_run_id:
            fields.append(("mlflow_run_id", o.mlflow_run_id))
        return "\n".join(["", "== harness summary ==", *summary_lines(fields)])


@contextlib.contextmanager
def _sqlite_writer_lock(uri: str, timeout_s: float = 600.0) -> Any:
    """Hold an exclusive lock beside a sqlite MLflow store while logging one run.

    Concurrent jobs (a multirun, SLURM array tasks) writing one sqlite file fail: sqlite has a
    single writer, and two jobs creating a new database race in MLflow's schema migration.
    Other URIs (a tracking server, a database server) need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///").split("?", 1)[0] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout_s:.0f} s for the lock {lock}") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def run(
    cfg: DictConfig, valid: validate.Validated, overrides: list[str], sweep_id: str = ""
) -> Outcome:
    """Benchmark and record. UserErrors propagate before anything is written.

    ``sweep_id`` tags the run as one job of a sweep ($HARNESS_SWEEP_ID wins when set).
    """
    reporter = Reporter()
    bench = Benchmark(cfg, valid, overrides, reporter)  # hardware errors raise here
    bench.sweep_id = bench.sweep_id or sweep_id

    def on_timeout() -> None:
        outcome = Outcome(
            status="timeout",
            weights_hash="TIMEOUT",
            error=f"timeout after {bench.top.bench.timeout_s} s",
        )
        if bench.record(outcome):
            print(
                f"error: benchmark exceeded bench.timeout_s={bench.top.bench.timeout_s}",
                file=sys.stderr,
            )
            os._exit(124)

    timer = threading.Timer(bench.top.bench.timeout_s, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        outcome = bench.execute()
    except UserError:
        timer.cancel()
        raise
    except Exception as exc:
        timer.cancel()
        reporter.info("".join(traceback.format_exception(exc)))
        crash = Outcome(status="crash", weights_hash="CRASH", error=f"{type(exc).__name__}: {exc}")
        bench.record(crash)
        raise
    timer.cancel()
    if not bench.record(outcome):  # the watchdog got there first
        time.sleep(3600)
    print(bench.summary(outcome), flush=True)
    return outcome
