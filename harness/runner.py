"""One benchmark, end to end: the data flow of DESIGN.md from a composed config to the sinks."""

from __future__ import annotations

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
        self, cfg: DictConfig, valid: validate.Validated, overrides: list[str], reporter: Reporter
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
        self.env = fingerprint(self.runtime, self.cwd)
        self._lock = threading.Lock()
        self._recorded = False
        self.started = datetime.now(timezone.utc)

    # ---- the data flow -------------------------------------------------------------------
    def execute(self) -> Outcome:
        """Load → prepare → warmup → timed runs → hash → verdict. Never writes anything."""
        mc, bench, say = self.method_cfg, self.top.bench, self.reporter.info
        say(f"dataset {self.dataset_cfg.name}: loading")
        loader = validate.locate(self.dataset_cfg._target_, "dataset._target_")
        data = loader(self.dataset_cfg)
        method_cls = validate.locate(mc._target_, "method._target_")
        method = method_cls(mc, self.runtime)
        method.check_inputs(data)
        say(f"method {mc.name}: prepare on {self.runtime.device} ({self.env['device_name']})")
        t0 = time.perf_counter()
        state = method.prepare(data)
        self.runtime.synchronize()
        say(f"prepare done in {time.perf_counter() - t0:.2f} s")

        def digest(outputs: Any) -> str:
            return weights_hash(outputs, bench.hash_decimals, mc.hashed_outputs or None)

        m = measure(
            lambda: method.run(state),
            self.runtime,
            bench.warmup,
            bench.repeats,
            digest,
            self.reporter,
        )
        outcome = Outcome(status=self.top.run.status, measurement=m, weights_hash=m.hashes[-1])
        outcome.metrics.update(method.quality(m.outputs, data))
        if hasattr(method, "series"):  # per-step metrics of the last run (e.g. per epoch)
            outcome.series.update(method.series())
        if self.top.run.output:
            if not hasattr(method, "write_output"):
                raise UserError(f"run.output: method {mc.name} does not write output files")
            path = (self.cwd / self.top.run.output).resolve()
            method.write_output(m.outputs, data, path)
            say(f"output written: {path}")
        if mc.parity_output and mc.parity_output in m.outputs:
            outcome.tags["parity_hash"] = parity_hash(m.outputs[mc.parity_output])
        self._judge(outcome, method)
        return outcome

    def _baseline_path(self) -> Path:
        dataset_tree = OmegaConf.to_container(self.raw.dataset, resolve=True)
        key = baselines.BaselineKey(
            method=self.method_cfg.name,
            dataset=self.dataset_cfg.name,
            dataset_params=baselines.short_hash(dataset_tree),
            hardware=self.top.hardware.name,
            environment=baselines.short_hash(environment_key(self.env)),
        )
        return key.path(self.results / "baselines")

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
            self.reporter.info(f"baseline saved: {path.relative_to(self.results.parent)}")
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
                outcome.mlflow_run_id = self._log_mlflow(outcome)
            except Exception as exc:  # the row must not be lost because tracking failed
                outcome.error = outcome.error or f"MLflow logging failed: {exc}"
                print(f"error: MLflow logging to {self._uri()} failed: {exc}", file=sys.stderr)
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
            "tag": self.top.run.tag,
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


def run(cfg: DictConfig, valid: validate.Validated, overrides: list[str]) -> Outcome:
    """Benchmark and record. UserErrors propagate before anything is written."""
    reporter = Reporter()
    bench = Benchmark(cfg, valid, overrides, reporter)  # hardware errors raise here

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
