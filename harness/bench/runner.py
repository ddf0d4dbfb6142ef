"""One benchmark, end to end: the data flow (README "What one run does") from a validated config
to the sinks.

hardware.resolve → dataset.load → method.check_inputs → method.prepare (untimed)
→ protocol (repeat | train) → hash every run → quality (read-only) → verdict → sinks
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.bench import baseline as baselines
from harness.bench import hardware
from harness.bench.checkpoint import Checkpoint, CheckpointFile
from harness.bench.contract import RunResult, check_method
from harness.bench.fingerprint import code_version, environment_key, fingerprint
from harness.bench.hashing import output_hash, parity_hash, select
from harness.bench.protocol import Measurement, Tampered, measure
from harness.bench.seal import Seal, project_root
from harness.config import validate
from harness.config.schema import Config
from harness.config.taskkey import task_params
from harness.core.errors import UserError
from harness.core.fsio import atomic_files
from harness.sinks.console import Reporter
from harness.sinks.runrecord import Identity, RunRecord, Timings, Tracking


@dataclass
class Outcome:
    """What a benchmark produced, for the sinks and for callers (sweepers, the loop)."""

    status: str
    output_hash: str = ""
    verdict: str = ""
    measurement: Measurement | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    mlflow_run_id: str = ""
    mlflow_url: str = ""
    tags: dict[str, str] = field(default_factory=dict)


WARMUP_SEED_OFFSET = 1_000_003  # the warm-up's input: dataset seed + this


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
        self.spec = type(valid.method)  # the method's contract declarations
        self.results = (self.cwd / self.top.paths.results).resolve()
        self.runtime = hardware.resolve(
            self.top.hardware,
            self.method_cfg.dtype,
            (self.cwd / self.top.paths.cache).resolve(),
            self.top.bench.seed,
            valid.autocast,
        )
        self.env = env or fingerprint(self.runtime, self.cwd)
        surface = [*self.method_cfg.editable, *self.method_cfg.readonly]
        self.code_version = code_version(surface)
        self._lock = threading.Lock()
        self._recorded = False
        self._record_done = threading.Event()
        # jobs of one sweep share this id (results.tsv tag "sweep:<id>", MLflow tag sweep_id)
        self.sweep_id = os.environ.get("HARNESS_SWEEP_ID", "")
        self.swept: list[str] = []  # the keys the sweep varies, when known (run names)
        self.started = datetime.now(timezone.utc)
        self.finished: datetime | None = None
        self._live: Any = None  # a trainer's streaming MLflow run: opaque, the sink's own
        self.prepare_s = float("nan")  # check_inputs + prepare of the benchmark input

    # ---- the data flow -------------------------------------------------------------------
    def load(self, dataset_cfg: Any = None) -> Any:
        """The dataset's objects (``dataset._target_`` called with its config)."""
        dataset_cfg = dataset_cfg or self.dataset_cfg
        self.reporter.info(f"dataset {dataset_cfg.name}: loading")
        loader = validate.locate(dataset_cfg._target_, "dataset._target_")
        return loader(dataset_cfg)

    def build(self) -> Any:
        """The method object (its class checked against the contract)."""
        mc = self.method_cfg
        method_cls = validate.locate(mc._target_, "method._target_")
        check_method(method_cls, mc.name)
        return method_cls(mc, self.runtime)

    def setup(self, data: Any = None, method: Any = None) -> tuple[Any, Any, Any]:
        """Load the dataset (unless given), build and check the method, prepare it (untimed)."""
        mc, say = self.method_cfg, self.reporter.info
        data = self.load() if data is None else data
        method = method or self.build()
        say(f"method {mc.name}: prepare on {self.runtime.device} ({self.env['device_name']})")
        t0 = time.perf_counter()
        method.check_inputs(data)
        state = method.prepare(data)
        self.runtime.synchronize()
        # check_inputs + prepare run editable code on the input: reported (the loop times it)
        self.prepare_s = time.perf_counter() - t0
        say(f"prepare done in {self.prepare_s:.2f} s")
        return method, data, state

    def digest(self, outputs: Any) -> str:
        """The canonical hash of a run's (host) outputs."""
        names = select(outputs, self.method_cfg.hashed_outputs)
        return output_hash(outputs, self.top.bench.hash_decimals, names)

    def task(self) -> dict[str, Any]:
        """The task identity: method keys that define the task, dataset and its parameters."""
        return {
            "method": self.method_cfg.name,
            "task": task_params(self.method_cfg),
            "dataset": OmegaConf.to_container(self.raw.dataset, resolve=True),
        }

    def checkpoint(self) -> Checkpoint | None:
        """The harness-owned checkpoint of a trainer (None when off or not a trainer)."""
        ck = self.top.checkpoint
        if not ck.enabled or self.spec.TIMING != "train":
            return None
        key = baselines.short_hash(
            {
                **self.task(),
                "code": self.code_version,
                "hardware": self.top.hardware.name,
                "dtype": str(self.runtime.dtype),
                "autocast": self.runtime.autocast,
                "env": environment_key(self.env),
            }
        )
        name = f"{baselines._slug(self.dataset_cfg.name)}__{self.top.hardware.name}.pt"
        path = (self.cwd / self.top.paths.checkpoints).resolve() / self.method_cfg.name / name
        file = CheckpointFile(path, key, log=lambda msg: self.reporter.info(f"checkpoint: {msg}"))
        return Checkpoint(file, ck.every_epochs, ck.every_steps, ck.every_minutes, ck.keep)

    def execute(self, data: Any = None) -> Outcome:
        """Load → prepare → protocol → hash → verdict. Writes no row or MLflow run (only a
        trainer's checkpoint, and the baseline when there is none and bench.baseline allows)."""
        bench = self.top.bench
        # before method code is imported; debuggers allowed (no process-hook check)
        seal = Seal.for_files(project_root(), self.method_cfg.readonly, process_hooks=False)
        warm: dict[str, Any] = {}
        warm_cfg = self.warmup_input() if data is None else None
        if warm_cfg is not None:
            self.reporter.info(f"warm-up on an input of its own (dataset seed {warm_cfg.seed})")
            warm["method"], _, warm["state"] = self.setup(self.load(warm_cfg))
        method, data, state = self.setup(data, method=warm.get("method"))
        listener = None
        if self.top.tracking.mlflow and self.spec.TIMING == "train":
            from harness.sinks import record

            self._live = record.open_live(self.run_record(Outcome(status="running")))
            listener = self._live.add if self._live is not None else None
        m = measure(
            lambda ctx: method.run(state, ctx),
            self.runtime,
            self.spec.TIMING,
            bench.warmup,
            bench.repeats,
            bench.warmup_steps,
            self.digest,
            self.reporter,
            checkpoint=self.checkpoint(),
            listener=listener,
            warm_run=(lambda ctx: method.run(warm["state"], ctx)) if warm else None,
            warm_done=warm.clear,
        )
        problems = seal.problems()
        if problems:
            raise Tampered("read-only code changed during the run: " + "; ".join(problems[:3]))
        return self.conclude(method, data, m)

    def warmup_input(self) -> Any:
        """The dataset config of the warm-up's own input (a dataset that can draw one: another
        seed), or None (the warm-up then runs on the benchmark input)."""
        if not self.top.bench.warmup_own_input:
            return None
        seed = getattr(self.dataset_cfg, "seed", None)
        return None if seed is None else self.dataset_cfg.draw(int(seed) + WARMUP_SEED_OFFSET)

    def conclude(self, method: Any, data: Any, m: Measurement) -> Outcome:
        """Quality metrics, optional output file, parity hash and verdict of a measurement."""
        mc = self.method_cfg
        outcome = Outcome(status=self.top.run.status, measurement=m, output_hash=m.hashes[-1])
        outcome.metrics.update(method.quality(m.result, data))
        outcome.metrics["prepare_s"] = self.prepare_s
        outcome.metrics.update({f"work_{k}": float(v) for k, v in m.result.work.items()})
        if m.checkpoint_s:
            outcome.metrics["checkpoint_s"] = m.checkpoint_s
        if m.resumed:
            outcome.tags["resumed"] = m.resumed
        if self.top.run.output:
            if not hasattr(method, "write_output"):
                raise UserError(f"run.output: method {mc.name} does not write output files")
            path = (self.cwd / self.top.run.output).resolve()
            with atomic_files(path) as partial:  # never a half-written file (a crash, Ctrl-C)
                method.write_output(m.result, data, partial)
            self.reporter.info(f"output written: {path}")
        if mc.parity_output and mc.parity_output in m.outputs:
            outcome.tags["parity_hash"] = parity_hash(m.outputs[mc.parity_output])
        self.judge(outcome, method.compare)
        return outcome

    def baseline_path(self) -> Path:
        task = self.task()
        key = baselines.BaselineKey(
            method=self.method_cfg.name,
            method_params=baselines.short_hash(task["task"]),
            dataset=self.dataset_cfg.name,
            dataset_params=baselines.short_hash(task["dataset"]),
            hardware=self.top.hardware.name,
            environment=baselines.short_hash(environment_key(self.env)),
        )
        return key.path((self.cwd / self.top.paths.baselines).resolve())

    def judge(self, outcome: Outcome, compare: Any) -> None:
        """The verdict against the stored baseline (storing one when there is none)."""
        m, mode = outcome.measurement, self.top.bench.baseline
        assert m is not None
        if self.spec.DETERMINISM == "bitwise" and not m.deterministic:
            outcome.verdict = "nondeterministic"
            self.reporter.info(
                f"hashes differ between runs: {sorted(set(m.hashes + m.warmup_hashes))}"
            )
            return
        if mode == "off":
            outcome.verdict = "none"
            return
        path = self.baseline_path()
        stored = None if mode == "save" else baselines.load(path)
        if stored is None and mode in ("save", "auto"):
            meta = {"commit": self.env["commit"], "created": self.started.isoformat()}
            baselines.save(path, outcome.output_hash, m.outputs, meta, m.result.work)
            outcome.verdict = "none"
            if outcome.status == "run":
                outcome.status = "baseline"
            self.reporter.info(f"baseline saved: {path}")
            return
        verdict, metrics = baselines.verdict(outcome.output_hash, m.result, stored, compare)
        outcome.verdict = verdict
        outcome.metrics.update({f"cmp_{k}": v for k, v in metrics.items()})

    # ---- sinks ---------------------------------------------------------------------------
    def record(self, outcome: Outcome, wait: bool = False) -> bool:
        """Write the MLflow run and the results.tsv row, once. False if already recorded
        (``wait``: after the other record, e.g. the watchdog's, has finished)."""
        from harness.sinks import record

        with self._lock:
            if self._recorded:
                if wait:
                    self._record_done.wait(600)
                return False
            self._recorded = True
        try:
            self.finished = datetime.now(timezone.utc)
            rec = self.run_record(outcome)
            record.write(rec, self._live)
            outcome.mlflow_run_id, outcome.error = rec.mlflow_run_id, rec.error
            outcome.mlflow_url = rec.mlflow_url
        finally:
            self._record_done.set()
        return True

    def summary(self, o: Outcome) -> str:
        from harness.sinks.console import benchmark_summary

        return benchmark_summary(self.run_record(o))

    def run_record(self, o: Outcome) -> RunRecord:
        """The plain record every sink receives (``harness.sinks.runrecord``)."""
        from harness.sinks.record import tracking_uri

        top, env, m = self.top, self.env, o.measurement
        identity = Identity(
            method=self.method_cfg.name, dataset=self.dataset_cfg.name, hardware=top.hardware.name,
            timing=self.spec.TIMING, commit=env["commit"], branch=env["branch"],
            dirty=bool(env["dirty"]), device_name=env["device_name"], dtype=str(env["dtype"]),
            overrides=tuple(self.overrides), started=self.started, swept=tuple(self.swept),
            sweep_id=self.sweep_id, tag=top.run.tag or "", description=top.run.description or "",
            quality=tuple(self.spec.QUALITY),
        )  # fmt: skip
        tracking = Tracking(
            enabled=bool(top.tracking.mlflow), uri=tracking_uri(top.tracking.uri, self.results),
            experiment=top.tracking.experiment or self.method_cfg.name,
            live_interval_s=float(top.tracking.live_interval_s), results=self.results,
        )  # fmt: skip
        timings = None
        if m is not None:
            timed = bool(m.elapsed)
            timings = Timings(
                timing=m.timing, elapsed=tuple(m.elapsed), median=m.median if timed else 0.0,
                min=m.min if timed else 0.0, iqr=m.iqr if timed else 0.0,
                n_samples=len(m.samples), warmup_s=tuple(m.warmup_s),
                peak_mem_mb=m.peak_mem_mb, resumed=m.resumed,
                series=m.result.series_by_key() if timed else {},
            )  # fmt: skip
        return RunRecord(
            identity=identity, tracking=tracking, environment=dict(env),
            config=OmegaConf.to_container(self.raw, resolve=True),
            config_yaml=OmegaConf.to_yaml(self.raw, resolve=True), log=self.reporter.text(),
            status=o.status, finished=self.finished, timings=timings,
            output_hash=o.output_hash, verdict=o.verdict, metrics=dict(o.metrics),
            tags=dict(o.tags), error=o.error, mlflow_run_id=o.mlflow_run_id,
            mlflow_url=o.mlflow_url,
        )  # fmt: skip


__all__ = ["Benchmark", "Outcome", "RunResult"]
