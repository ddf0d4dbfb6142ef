"""One loop attempt: surface check → correctness → interleaved timing → keep or revert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.optimize import gitops
from harness.optimize.state import LoopState
from harness.optimize.workers import (
    Interleaved,
    Worker,
    WorkerFailed,
    decide,
    interleave,
    split_rounds,
)


class Attempt:
    """Judge the committed HEAD of a loop branch against the state's last kept commit."""

    def __init__(
        self,
        repo: Any,
        state: LoopState,
        results: Path,
        description: str,
        overrides: list[str],
        candidate_extra: list[str],
    ) -> None:
        from harness.config.compose import compose_checked

        self.repo, self.state, self.results = repo, state, results
        self.description, self.overrides = description, overrides
        self.candidate_extra = candidate_extra
        self.head = repo.head.commit.hexsha
        self.cfg, self.valid = compose_checked(overrides + candidate_extra)
        self.top = self.valid.top
        self.reason = ""
        self.speedup: float | None = None
        self.number = len(state.attempts) + 1
        self.dir = results / "attempts" / state.tag
        self.root = Path(repo.working_tree_dir)

    # ---- pieces -------------------------------------------------------------------------
    def _worker_overrides(self, extra: list[str]) -> list[str]:
        """The loop's overrides, plus absolute shared paths; workers write nothing."""
        paths = self.top.paths
        cwd = Path.cwd()
        return [
            *self.overrides,
            *extra,
            f"paths.results={self.results}",
            f"paths.cache={(cwd / paths.cache).resolve()}",
            f"paths.baselines={(cwd / paths.baselines).resolve()}",
            "bench.baseline=compare",
            "tracking.mlflow=false",
        ]

    def _worker(self, checkout: Path, role: str, pair: int = 0) -> Worker:
        suffix = f"-{pair + 1}" if pair else ""
        log = self.dir / f"{self.number:03d}-{self.head[:8]}-{role}{suffix}.log"
        extra = self.candidate_extra if role == "candidate" else []
        return Worker(checkout, self._worker_overrides(extra), log, self.top.bench.timeout_s)

    def _record(
        self,
        status: str,
        verdict: str,
        digest: str,
        inter: Interleaved | None,
        metrics: dict[str, float],
        warmup_s: list[float],
        peak_mb: float,
    ) -> None:
        from harness.bench.protocol import Measurement
        from harness.bench.runner import Benchmark, Outcome
        from harness.sinks.console import Reporter

        self.top.run.tag = self.state.tag
        self.top.run.description = f"{self.description} | {self.reason}"
        overrides = self.overrides + self.candidate_extra
        bench = Benchmark(self.cfg, self.valid, overrides, Reporter(rich=False))
        m = Measurement(warmup_s=warmup_s, peak_mem_mb=peak_mb)
        if inter and inter.b:
            m.elapsed, m.hashes = inter.b, inter.b_hashes
            m.samples = list(inter.b)
        bench.record(
            Outcome(
                status=status, output_hash=digest, verdict=verdict, measurement=m, metrics=metrics
            )
        )

    def _revert(self, status: str, logs: list[Path]) -> None:
        patch = self.dir / f"{self.number:03d}-{self.head[:8]}-{status}.patch"
        gitops.save_patch(self.repo, self.state.kept, self.head, patch)
        gitops.reset_to(self.repo, self.state.kept)
        print(
            f"saved {patch.relative_to(self.results.parent)}; branch reset to {self.state.kept[:12]}"
        )

    # ---- the decision -------------------------------------------------------------------
    def run(self) -> str:
        # tuned-parameter files of this method are fair game too (harness.tune commits them)
        editable = [*self.valid.method.editable, f"conf/tuned/{self.valid.method.name}/*"]
        outside = gitops.outside_surface(gitops.changed_files(self.repo, self.state.kept), editable)
        if outside:
            self.reason = f"touches files outside the editable surface: {', '.join(outside[:5])}"
            self._record("discard", "", "", None, {}, [], 0.0)
            self._revert("discard", [])
            return "discard"
        candidate = kept = None
        inter = Interleaved()
        try:
            candidate = self._worker(self.root, "candidate")
            warmup_s = candidate.ready["warmup_s"]
            first = candidate.request("run")
            judged = candidate.request("judge")
            verdict, digest = judged["verdict"], first["hash"]
            metrics = {f"candidate_{k}": v for k, v in judged["metrics"].items()}
            if verdict not in self.top.correctness.accept:
                self.reason = (
                    f"verdict {verdict} not in correctness.accept {self.top.correctness.accept}"
                )
                inter.b, inter.b_hashes = [first["elapsed"]], [digest]
                self._record(
                    "discard",
                    verdict,
                    digest,
                    inter,
                    metrics,
                    candidate.ready["warmup_s"],
                    judged["peak_mem_mb"],
                )
                self._revert("discard", [])
                return "discard"
            worktree = self.results / "worktrees" / f"{self.state.tag}-kept"
            gitops.worktree_at(self.repo, worktree, self.state.kept)
            kept = self._worker(worktree, "kept")
            loop = self.top.loop
            for pair, rounds in enumerate(split_rounds(loop.rounds, loop.pairs)):
                if pair:  # a fresh pair of processes; who starts first alternates
                    for w in (candidate, kept):
                        w.close()
                    candidate = kept = None
                    if pair % 2:
                        kept = self._worker(worktree, "kept", pair)
                    candidate = self._worker(self.root, "candidate", pair)
                    kept = kept or self._worker(worktree, "kept", pair)
                interleave(kept, candidate, rounds, inter)
        except WorkerFailed as exc:
            self.reason = f"{exc.status}: {exc}; log in {self.dir.name}/"
            status = "timeout" if exc.status == "timeout" else "crash"
            self._record(status, "", status.upper(), inter, {}, [], 0.0)
            self._revert(status, [])
            return status
        finally:
            for w in (candidate, kept):
                if w is not None:
                    w.close()
        d = decide(inter.a, inter.b, self.top.loop.min_gain, self.top.loop.k_iqr, inter.groups)
        self.reason, self.speedup = d.reason, d.speedup
        metrics.update(
            speedup=d.speedup, gain=d.gain, needed_gain=d.needed, kept_median_s=d.median_a
        )
        status = "keep" if d.keep else "discard"
        self._record(
            status,
            verdict,
            digest,
            inter,
            metrics,
            warmup_s,
            judged["peak_mem_mb"],
        )
        if not d.keep:
            self._revert("discard", [])
        return status
