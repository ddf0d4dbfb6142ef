"""``python -m harness.tune``: an Optuna study over the method's search space, gated by
correctness.

    python -m harness.tune method=rctd hardware=cpu tune.n_trials=30

Every trial benchmarks in this process (data loaded once) and writes a results.tsv row. A trial
whose verdict against the baseline is not in ``correctness.accept`` is infeasible (an Optuna
constraint) and can never be best. ``tune.n_trials`` is the total: a resumed study, or several
workers sharing one RDB storage, stop when the study holds that many trials. The best feasible
parameters go to ``conf/tuned/<method>/<hardware>.yaml`` (use: ``+tuned/<method>=<hardware>``);
on a loop branch they are committed and judged by the loop's keep rule.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from harness.core.errors import UserError, report_user_errors


def _storage_and_name(valid: Any, results: Path) -> tuple[str, str]:
    t, top = valid.top.tune, valid.top
    storage = t.storage or f"sqlite:///{results}/optuna.db"
    name = t.study or f"{valid.method.name}-{valid.dataset.name}-{top.hardware.name}"
    return storage, name


def tuned_path(method: str, hardware: str) -> Path:
    from harness.config.compose import CONF_DIR

    return CONF_DIR / "tuned" / method / f"{hardware}.yaml"


def write_tuned(path: Path, params: dict[str, Any], header: str) -> None:
    """The best parameters as a global-package config file, composable as an override."""
    from omegaconf import OmegaConf

    tree: dict[str, Any] = {}
    for name, value in params.items():
        key = name if name.startswith("hardware.") else f"method.{name}"
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    body = OmegaConf.to_yaml(OmegaConf.create(tree))
    path.write_text(f"# @package _global_\n{header}{body}")


class Study:
    """One tuning session: the Optuna study plus the harness's benchmark machinery."""

    def __init__(self, overrides: list[str]) -> None:
        from harness.config.compose import compose_checked
        from harness.config.searchspace import check_space

        self.overrides = overrides
        self.cfg, self.valid = compose_checked(overrides)
        self.space = dict(self.valid.method.search_space)
        check_space(self.space)
        self.results = (Path.cwd() / self.valid.top.paths.results).resolve()
        self.storage, self.name = _storage_and_name(self.valid, self.results)
        self.data: Any = None
        self.env: dict[str, Any] | None = None
        self.overheads: list[float] = []

    def _bench(self, params: dict[str, Any], mode: str, description: str):  # -> Benchmark
        """A Benchmark of the composed config with ``params`` set (no re-composition)."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from harness.bench.runner import Benchmark
        from harness.config.searchspace import as_overrides
        from harness.config.validate import omegaconf_message, validate_all
        from harness.sinks.console import Reporter

        cfg = self.cfg.copy()
        try:
            for name, value in params.items():
                key = name if name.startswith("hardware.") else f"method.{name}"
                OmegaConf.update(cfg, key, value, merge=False)
            cfg.run.tag, cfg.run.description = f"tune:{self.name}", description
            cfg.bench.baseline, cfg.tracking.mlflow = mode, False
        except OmegaConfBaseException as exc:
            raise UserError(omegaconf_message(exc)) from None
        overrides = [*self.overrides, *as_overrides(params)]
        reporter = Reporter(stream=sys.stderr, rich=False)
        return Benchmark(cfg, validate_all(cfg), overrides, reporter, env=self.env)

    def ensure_baseline(self) -> None:
        """The default parameters' outputs are the correctness reference of every trial."""
        bench = self._bench({}, "auto", f"tune {self.name}: default parameters")
        self.env = bench.env  # the fingerprint holds for the whole study
        self.data = bench.load()
        outcome = bench.execute(self.data)
        bench.record(outcome)
        print(
            f"tune {self.name}: default parameters {outcome.measurement.median:.4f} s "
            f"(verdict {outcome.verdict}, status {outcome.status})",
            flush=True,
        )

    def objective(self, trial: Any) -> float:
        import optuna

        from harness.bench.runner import Outcome
        from harness.config.searchspace import suggest

        t0 = time.perf_counter()
        params = suggest(trial, self.space)
        try:
            bench = self._bench(params, "compare", f"trial {trial.number}")
        except UserError as exc:  # a combination the schema refuses
            trial.set_user_attr("infeasible_reason", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        try:
            outcome = bench.execute(self.data)
        except Exception as exc:
            bench.record(
                Outcome(status="crash", output_hash="CRASH", error=f"{type(exc).__name__}: {exc}")
            )
            trial.set_user_attr("infeasible_reason", f"crash: {type(exc).__name__}: {exc}")
            raise
        bench.record(outcome)
        m = outcome.measurement
        feasible = outcome.verdict in self.valid.top.correctness.accept
        if hasattr(trial, "set_constraint"):  # optuna >= 5; older ones read constraints_func
            trial.set_constraint("verdict", 0.0 if feasible else 1.0)
        else:
            trial.set_user_attr("constraint", [0.0 if feasible else 1.0])
        self.overheads.append(time.perf_counter() - t0 - sum(m.warmup_s) - sum(m.elapsed))
        trial.set_user_attr("verdict", outcome.verdict)
        trial.set_user_attr(
            "run",
            {
                "output_hash": outcome.output_hash,
                "overhead_s": self.overheads[-1],
                "infeasible": "" if feasible else f"verdict {outcome.verdict} not accepted",
            },
        )
        return m.median

    def run(self) -> Any:
        import optuna

        from harness.optimize.trials import run_trials, storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        legacy = {}
        if not hasattr(optuna.trial.Trial, "set_constraint"):
            legacy["constraints_func"] = lambda t: t.user_attrs.get("constraint", [1.0])
        sampler = optuna.samplers.TPESampler(seed=self.valid.top.tune.seed, **legacy)
        self.results.mkdir(parents=True, exist_ok=True)
        study = _create(optuna, self.name, storage(self.storage), sampler)
        total = self.valid.top.tune.n_trials
        print(
            f"tune {self.name}: {len(study.trials)} trials stored, target {total} ({self.storage})"
        )
        self.ran = run_trials(study, self.storage, total, self.objective, self.ensure_baseline)
        return study


def _create(optuna: Any, name: str, store: Any, sampler: Any) -> Any:
    """Create or load the study (two workers creating it at once: one wins, both load it)."""
    try:
        return optuna.create_study(
            study_name=name, storage=store, load_if_exists=True, direction="minimize",
            sampler=sampler,
        )  # fmt: skip
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=store, sampler=sampler)


def report(study: Any, overheads: list[float], accept: list[str]) -> Any:
    """Print the trials; return the best feasible trial (or None)."""
    from optuna.trial import TrialState

    print(f"{'#':>4} {'state':9} {'median_s':>10} {'verdict':17} params")
    for t in study.trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        verdict = t.user_attrs.get("verdict") or t.user_attrs.get("infeasible_reason", "")[:17]
        print(f"{t.number:>4} {t.state.name:9} {value:>10} {verdict:17} {t.params}")
    if overheads:
        print(
            f"per-trial overhead beyond the method's runs: median {sorted(overheads)[len(overheads) // 2]:.3f} s"
        )
    feasible = [
        t
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.user_attrs.get("verdict") in accept
    ]
    return study.best_trial if feasible else None


def _last_writer(study: Any, url: str, best: int) -> bool:
    """True for exactly one worker of a finished study: the first to find every trial
    finished and the best not yet written (decided under the workers' claim lock)."""
    from harness.optimize.trials import claim_lock

    with claim_lock(url, study.study_name):
        trials = study.get_trials(deepcopy=False)
        if any(t.state.name in ("RUNNING", "WAITING") for t in trials):
            print(f"tune {study.study_name}: other workers still run trials; they write the result")
            return False
        if study.user_attrs.get("tuned_written") == best:
            return False
        study.set_user_attr("tuned_written", best)
        return True


def run(argv: list[str]) -> int:
    """Run (or resume) the study, print it, write and maybe commit the best parameters."""
    from harness.optimize.tuneloop import loop_overrides

    session = Study(loop_overrides(argv))
    study = session.run()
    best = report(study, session.overheads, session.valid.top.correctness.accept)
    if best is None:
        print(f"tune {session.name}: no feasible trial yet")
        return 1
    print(f"best feasible: trial {best.number}, median {best.value:.4f} s, {best.params}")
    if session.valid.top.tune.write and _last_writer(study, session.storage, best.number):
        m, hw = session.valid.method.name, session.valid.top.hardware.name
        path = tuned_path(m, hw)
        header = (
            f"# Best feasible parameters of Optuna study '{session.name}' (trial "
            f"{best.number}, median {best.value:.4f} s).\n# Use: python -m harness +tuned/{m}={hw}\n"
        )
        write_tuned(path, best.params, header)
        print(f"wrote {path}")
        from harness.optimize.tuneloop import commit_on_loop_branch

        commit_on_loop_branch(path, f"tune {session.name}: {best.params}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return report_user_errors(lambda: run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
