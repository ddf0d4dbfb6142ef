"""One loop attempt, judged by the rules frozen at ``start`` — never by the candidate's tree or
command line:

1. surface: every changed file is in the frozen editable surface (or the tuned-parameters
   file, setting search-space keys only); every import of an edited file is declared;
2. correctness, before any timing counts: the candidate on the benchmark input against the
   loop's baseline, and on the held-out check input against its baseline;
3. timing and correctness together: worker pairs (a fresh candidate worker, a kept-commit
   worker), each round on a FRESH input (a dataset seed drawn now, loaded by the judge itself
   and handed to both workers as a file: reading it, ``check_inputs``, ``prepare`` and the run
   are all timed from outside, in alternating order, so no candidate code sees the input off
   the clock — :mod:`harness.optimize.inputs`), and the candidate's outputs, read and hashed
   here from the raw file its worker wrote, must agree with the
   kept commit's on that input (exact or close, work counters equal) — so a cache, a memo
   keyed on the input, or a function that is right only on its first calls cannot pass;
4. the sequential rule (:mod:`harness.optimize.decide`) decides keep / discard;
5. anything not kept: the diff and the worker logs are saved, the branch reset.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.bench import baseline as baselines
from harness.bench.contract import RunResult
from harness.core.errors import UserError
from harness.optimize import gitops, surface
from harness.optimize.decide import Decision, Rule
from harness.optimize.inputs import prepared_run, write_input
from harness.optimize.pairs import Session, describe_pairs, fresh_draw, run_pairs
from harness.optimize.state import LoopState
from harness.optimize.workers import Launch, PairLog, Worker, WorkerFailed

SEVERITY = {"exact": 0, "close": 1, "none": 2, "wrong": 3}
MALLOC_ENV = (
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_MMAP_THRESHOLD_", "4294967296"),
    ("MALLOC_TRIM_THRESHOLD_", "4294967296"),
    ("MALLOC_TOP_PAD_", "268435456"),
)


class KeptFailed(Exception):
    """The kept commit's worker failed: the candidate was not judged (not its fault)."""


def _as_kept(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except WorkerFailed as exc:
        raise KeptFailed(f"{exc.status}: {exc}") from None


class Rejected(Exception):
    """The candidate failed a check; ``status`` is ``rejected`` (static) or ``discard``."""

    def __init__(self, status: str, reason: str, verdict: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.verdict = status, reason, verdict


def launch_for(cfg: Any) -> Launch:
    """Worker launch settings from a LaunchConfig."""
    import os

    prefix: tuple[str, ...] = ()
    env: list[tuple[str, str]] = []
    if cfg.pin:
        cpu = cfg.cpu if cfg.cpu >= 0 else (os.cpu_count() or 1) - 1
        prefix += ("taskset", "-c", str(cpu))
    if cfg.no_aslr:
        prefix += ("setarch", platform.machine(), "-R")
    if cfg.malloc:
        env += list(MALLOC_ENV)
    if cfg.threads > 0:
        env += [("OMP_NUM_THREADS", str(cfg.threads)), ("MKL_NUM_THREADS", str(cfg.threads))]
    return Launch(prefix, tuple(env))


def rule_for(cfg: Any, neutral: bool = False) -> Rule:
    return Rule(
        min_gain=cfg.min_gain, alpha=cfg.alpha, beta=cfg.beta, detect=cfg.detect,
        interim_alpha=cfg.interim_alpha, min_pairs=cfg.min_pairs, max_pairs=cfg.max_pairs,
        pair_sd=cfg.pair_sd, max_slowdown=cfg.max_slowdown, neutral=neutral,
    )  # fmt: skip


def clock_for(cfg: Any, device: str) -> str:
    return "wall" if device == "cuda" else cfg.clock


def fresh_fields(dataset: Any, draw: int) -> dict[str, Any]:
    """The dataset fields that make input number ``draw`` (e.g. ``{"seed": draw}``)."""
    fresh = dataset.draw(draw)
    if fresh is None:
        raise Rejected(
            "rejected",
            f"dataset {dataset.name} cannot draw fresh inputs (no seed, no subsample); the loop "
            "needs a synthetic dataset or one that resamples",
        )
    return {
        f.name: getattr(fresh, f.name)
        for f in dataclasses.fields(fresh)
        if getattr(fresh, f.name) != getattr(dataset, f.name)
    }


def tuned_override(repo: Any, commit: str, frozen: dict[str, Any]) -> list[str]:
    """``+tuned/<method>=<hardware>`` for a commit that holds the loop's tuned file."""
    if gitops.show(repo, commit, frozen["tuned_file"]) is None:
        return []
    return [f"+tuned/{frozen['method']}={frozen['hardware']}"]


INTERFERENCE_CORES = 0.75  # extra foreign load on every kept run of a pair: refused


def interference(log: PairLog) -> float:
    """How many more cores the rest of the machine kept busy while the kept commit was timed
    than while the candidate was, over a pair's rounds — or 0 unless that held in every round
    (background load falls on either side at random; a process the candidate left running to
    slow the other side falls on the kept side every time, its own group being stopped then)."""
    kept = [k.foreign / k.wall for k in log.kept if k.wall > 0]
    cand = [c.foreign / c.wall for c in log.candidate if c.wall > 0]
    if not kept or not cand or any(v != v for v in kept + cand):
        return 0.0
    gap = sum(k.foreign for k in log.kept) / sum(k.wall for k in log.kept) - sum(
        c.foreign for c in log.candidate
    ) / sum(c.wall for c in log.candidate)
    every = min(kept) - max(cand) > INTERFERENCE_CORES / 2
    return gap if every else 0.0


class Attempt:
    """Judge the committed HEAD of a loop branch against the state's last kept commit."""

    def __init__(
        self, repo: Any, state: LoopState, description: str, neutral: bool = False
    ) -> None:
        from harness.bench.runner import Benchmark
        from harness.config.compose import compose_checked
        from harness.sinks.console import Reporter

        self.repo, self.state, self.description, self.neutral = repo, state, description, neutral
        self.head = repo.head.commit.hexsha
        self.frozen = state.frozen
        self.results = Path(self.frozen["results"])
        self.cfg, self.valid = compose_checked(state.overrides)
        self.bench = Benchmark(
            self.cfg, self.valid, state.overrides, Reporter(stream=sys.stderr, rich=False)
        )
        self.method = self.bench.build()  # read-only compare/quality, from the judge's tree
        self.loop = self.valid.top.loop
        self.rule = rule_for(self.loop, neutral)
        self.clock = clock_for(self.loop, self.bench.runtime.device.type)
        self.launch = launch_for(self.loop.launch)
        self.number = len(state.attempts) + 1
        self.dir = self.results / "attempts" / state.tag
        self.root = Path(repo.working_tree_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=f".try-{self.number:03d}-", dir=self.dir))
        self.verdict = "exact"  # the worst verdict, against the loop's baseline and the kept commit
        self.kept_verdict = "exact"  # the worst against the kept commit (fresh inputs): --neutral
        self.templates: dict[str, Any] = {}  # per side, its worker template (loop.launch.fork)
        self.details: dict[str, Any] = {"draws": []}
        from harness.optimize import cgroup

        why = cgroup.available()  # a freezer cgroup per worker (cgroup.py) where allowed
        self.cgroups = not why
        self.details["cgroup"] = why or "on"
        if self.loop.launch.sandbox:
            self.launch = self._sandboxed(self.launch)
        self.candidate_outputs: RunResult | None = None
        self.decision: Decision | None = None
        self.session = Session()
        self.reason = ""
        self.status = ""

    # ---- static checks (no candidate code runs) ----------------------------------------
    def check_static(self) -> None:
        frozen = self.frozen
        # from the loop's base, not the last kept commit: a commit kept by anything but this
        # judge (a first hop that never reached it) cannot smuggle a change in
        files = gitops.changed_files(self.repo, self.state.base, self.head)
        tuned = frozen.get("tuned_file")
        outside = surface.outside_surface(files, frozen["editable"], tuned)
        if outside:
            shown = ", ".join(outside[:5])
            raise Rejected(
                "rejected", f"touches files outside the frozen editable surface: {shown}"
            )
        if tuned in files:
            text = gitops.show(self.repo, self.head, tuned) or ""
            why = surface.tuned_violation(text, frozen["search_space"])
            if why:
                raise Rejected("rejected", f"{tuned}: {why}")
        for path in files:
            if not path.endswith(".py"):
                continue
            text = gitops.show(self.repo, self.head, path)
            if text is None:
                continue
            try:
                bad = surface.import_violations(
                    text,
                    frozen["declared_imports"],
                    surface.editable_modules(frozen["editable"]),
                    path,
                )
            except SyntaxError as exc:
                raise Rejected("rejected", f"{path}: does not parse ({exc.msg})") from None
            if bad:
                raise Rejected("rejected", f"{path} imports {bad[0]}")

    # ---- workers -----------------------------------------------------------------------
    def _sandboxed(self, launch: Launch) -> Launch:
        """``launch`` inside the OS sandbox (:mod:`.sandbox`): what the judge trusts read-only
        (the cgroup filesystems too: a worker cannot move itself out of its cgroup)."""
        from harness.optimize import cgroup, sandbox

        why = sandbox.available()
        self.details["sandbox"] = why or "on"
        if why:
            return launch
        cache = (Path.cwd() / self.valid.top.paths.cache).resolve()
        readonly = [self.root, self.results, gitops.git_dir(self.repo),
                    Path(self.frozen["judge_tree"]), *sandbox.python_paths(),
                    *cgroup.mount_points()]  # fmt: skip  # a worker cannot leave its cgroup
        prefix = sandbox.prefix(readonly, writable=[self.dir, cache])
        return Launch(prefix + launch.prefix, launch.env)

    def _overrides(self, commit: str) -> list[str]:
        paths = self.valid.top.paths
        cwd = Path.cwd()
        extra = [
            f"paths.results={self.results}",
            f"paths.cache={(cwd / paths.cache).resolve()}",
            "bench.baseline=off",
            "tracking.mlflow=false",
            "checkpoint.enabled=false",
        ]
        if self.loop.launch.threads > 0:
            extra.append(f"hardware.threads={self.loop.launch.threads}")
        return [*self.state.overrides, *extra, *tuned_override(self.repo, commit, self.frozen)]

    def _worker(self, checkout: Path, role: str, pair: int) -> Worker:
        commit = self.head if role == "candidate" else self.state.kept
        log = self.dir / f"{self.number:03d}-{self.head[:8]}-{role}-{pair + 1}.log"
        overrides = self._overrides(commit)
        suspend = role == "candidate"  # stopped between requests: see Worker
        if self.loop.launch.fork and self.loop.warm_round:  # both sides alike (template.py)
            template = self.templates.get(role)
            if template is None:  # once per side and try: imports paid once
                from harness.optimize.template import Template

                tlog = self.dir / f"{self.number:03d}-{self.head[:8]}-{role}-template.log"
                template = self.templates[role] = Template(
                    checkout, overrides, tlog, self.bench.top.bench.timeout_s, self.launch,
                    cgroups=self.cgroups,
                )  # fmt: skip
            worker = template.fork(log, suspend)
            if role == "candidate":
                try:  # the candidate's import-time code ran in the template: nothing left there
                    self._left_behind(template.process)
                except Rejected:
                    worker.close()
                    raise
            return worker
        group = None
        if self.cgroups:  # frozen whole while the other side is timed; emptied at close
            from harness.optimize.cgroup import Cgroup

            group = Cgroup()
        return Worker(
            checkout, overrides, log, self.bench.top.bench.timeout_s, self.launch, suspend,
            lazy=self.loop.warm_round,  # the warm round warms it: no start-up input or run
            cgroup=group,
        )  # fmt: skip

    def _left_behind(self, cand: Worker) -> None:
        """Refuse a candidate whose worker left processes running outside its process group
        (in another session, daemonised): they could run while the other side is timed."""
        left = cand.leftovers()
        if left:
            from harness.optimize.cgroup import process_line

            raise Rejected(
                "rejected",
                f"the candidate left {len(left)} process{'es' if len(left) > 1 else ''} running "
                f"outside its worker ({process_line(left[0])}): a candidate must not start "
                "processes that outlive its request",
            )

    def _kept_tree(self) -> Path:
        tree = self.results / "worktrees" / f"{self.state.tag}-kept"
        return gitops.worktree_at(self.repo, tree, self.state.kept)

    def _kept_workers(self, tree: Path) -> tuple[Any, Any, Any]:
        """(start, release, client) for the kept side: warm workers from the loop's keeper
        (``loop.warm_kept``), or fresh ones closed after each pair."""
        if not self.loop.warm_kept or self.loop.launch.fork:
            return (lambda p: _as_kept(self._worker, tree, "kept", p)), (lambda w: w.close()), None
        from harness.optimize.keeper import KeeperClient, RemoteWorker

        spec = {
            "kept": self.state.kept,
            "tree": str(tree),
            "overrides": self._overrides(self.state.kept),
            "prefix": list(self.launch.prefix),
            "env": [list(e) for e in self.launch.env],
            "timeout_s": self.bench.top.bench.timeout_s,
            "logs": str(self.dir),
            "memory_mb": self.loop.warm_memory_gb * 1024,
            "lazy": self.loop.warm_round,
        }
        client = KeeperClient(self.state.dir / "keeper.sock", spec)
        return (lambda p: _as_kept(RemoteWorker, client, p)), (lambda w: None), client

    # ---- correctness -------------------------------------------------------------------
    def _saved(self, worker: Worker, name: str) -> baselines.Baseline:
        """The worker's raw outputs, read here (no pickles, numeric arrays only) and hashed
        here: nothing the worker says about its outputs is believed."""
        path = self.scratch / f"{name}.npz"
        worker.request("save", path=str(path))
        try:
            loaded = baselines.load(path, strict=True)
            if loaded is None:
                raise baselines.Malformed("no outputs file written")
            loaded.output_hash = self.bench.digest(loaded.outputs)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise Rejected("rejected", f"outputs file {path.name} refused ({exc})") from None
        return loaded

    def _judge(
        self,
        got: baselines.Baseline,
        reference: baselines.Baseline,
        where: str,
        vs_kept: bool = False,
    ) -> None:
        result = RunResult(outputs=got.outputs, work=got.work)
        verdict, metrics = baselines.verdict(
            got.output_hash, result, reference, self.method.compare
        )
        if SEVERITY.get(verdict, 3) > SEVERITY[self.verdict]:
            self.verdict = verdict
        if vs_kept and SEVERITY.get(verdict, 3) > SEVERITY[self.kept_verdict]:
            self.kept_verdict = verdict
        if verdict not in self.frozen["accept"]:
            shown = ", ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:4])
            raise Rejected(
                "discard",
                f"{where}: verdict {verdict} not in {self.frozen['accept']}"
                + (f" ({shown})" if shown else ""),
                verdict,
            )

    def gates(self, cand: Worker) -> None:
        """The candidate on the benchmark input and on the held-out check input."""
        if cand.lazy:  # no start-up input: the benchmark input, loaded here, as a file
            inp = write_input(self.valid.dataset, {}, self.scratch)
            prepared_run(cand, inp)
            inp.remove()
        else:
            cand.request("time")
        got = self._saved(cand, "benchmark")
        reference = baselines.load(self.state.baseline_path)
        assert reference is not None
        self._judge(got, reference, "benchmark input vs the loop's baseline")
        self.candidate_outputs = RunResult(outputs=got.outputs, work=got.work)
        self.details["output_hash"] = got.output_hash
        t0 = time.monotonic()
        inp = write_input(self.valid.dataset, self.frozen["check_fields"], self.scratch)
        self.session.inputs_s += time.monotonic() - t0
        prepared_run(cand, inp)
        inp.remove()
        check = baselines.load(self.state.check_path)
        assert check is not None
        self._judge(self._saved(cand, "check"), check, "held-out check input")

    def play(self, p: int, kept: Worker, cand: Worker, session: Session) -> PairLog:
        if p == 0:
            self.gates(cand)
            self._left_behind(cand)
        log = PairLog()
        if self.loop.warm_round:  # untimed, on an input of its own: both sides equally warm
            t0 = time.monotonic()
            fields = fresh_fields(self.valid.dataset, fresh_draw())
            inp = write_input(self.valid.dataset, fields, self.scratch)
            _as_kept(prepared_run, kept, inp)
            prepared_run(cand, inp)
            inp.remove()
            session.warmup_s += time.monotonic() - t0
        every = PairLog()  # all timed rounds, re-run ones too: what the interference check sees
        r = 0
        while r < self.loop.rounds:
            draw = fresh_draw()
            self.details["draws"].append(draw)
            t0 = time.monotonic()
            inp = write_input(
                self.valid.dataset, fresh_fields(self.valid.dataset, draw), self.scratch
            )
            session.inputs_s += time.monotonic() - t0
            t0 = time.monotonic()
            if (p + r) % 2 == 0:
                k = _as_kept(prepared_run, kept, inp)
                c = prepared_run(cand, inp)
            else:
                c = prepared_run(cand, inp)
                k = _as_kept(prepared_run, kept, inp)
            session.runs_s += time.monotonic() - t0
            inp.remove()
            ref = _as_kept(self._saved, kept, f"kept-{p}-{r}")
            self._judge(
                self._saved(cand, f"cand-{p}-{r}"),
                ref,
                f"fresh input {draw} (pair {p + 1})",
                vs_kept=True,
            )
            self._left_behind(cand)
            every.kept.append(k)
            every.candidate.append(c)
            if session.disturbed((k, c), self.loop.disturbed, self.loop.max_reruns):
                continue  # a busy neighbour took the CPU: not counted, another fresh input
            log.kept.append(k)
            log.candidate.append(c)
            r += 1
        self.details.setdefault("interference", []).append(round(interference(every), 3))
        return log

    def _interfered(self) -> str:
        """Why a keep is refused for interference ('' when no pair showed it)."""
        flagged = [
            (p + 1, x)
            for p, x in enumerate(self.details.get("interference", []))
            if x > INTERFERENCE_CORES
        ]
        if not flagged:
            return ""
        pair, extra = max(flagged, key=lambda f: f[1])
        return (
            f"interference: while the kept commit was timed the rest of the machine used "
            f"{extra:.2f} cores more than while the candidate was, in every round (pair {pair}; "
            f"{len(flagged)} of {len(self.session.pairs)} pairs): a process left running by the "
            "candidate slows the other side"
        )

    # ---- the decision ------------------------------------------------------------------
    def run(self) -> str:
        """Judge the candidate; returns the status (keep, keep-neutral, discard, rejected,
        crash, timeout)."""
        status = "discard"
        try:
            self.check_static()
            tree = self._kept_tree()
            start_kept, release_kept, client = self._kept_workers(tree)
            try:
                decision, _ = run_pairs(
                    start_kept,
                    lambda p: self._worker(self.root, "candidate", p),
                    self.play,
                    self.rule,
                    self.clock,
                    self.loop.max_seconds,
                    release_ref=release_kept,
                    session=self.session,
                )
            finally:
                if client is not None:
                    client.close()
                for template in self.templates.values():
                    template.close()
            self.decision = decision
            self.reason = decision.reason
            if decision.action == "keep":
                status = "keep-neutral" if self.neutral else "keep"
                why = self._interfered()
                if why:  # never a keep under interference; a discard stays a discard
                    status, self.reason = "rejected", why
        except Rejected as exc:
            status, self.reason = exc.status, exc.reason
            if exc.verdict:
                self.verdict = exc.verdict
        except KeptFailed as exc:
            raise UserError(
                f"loop try: the kept commit's worker failed ({exc}); the candidate was not judged "
                f"and stays at HEAD; logs in {self.dir}"
            ) from None
        except WorkerFailed as exc:
            status = {"timeout": "timeout", "tampered": "rejected"}.get(exc.status, "crash")
            self.reason = f"{exc.status}: {exc}; log in {self.dir.name}/"
        self.details.update(describe_pairs(self.session, self.clock))
        # an equal-result simplification: identical to the kept commit's outputs (after a close
        # keep the verdict against the loop's start is close for every later candidate)
        if status in ("keep", "keep-neutral") and self.neutral and self.kept_verdict != "exact":
            status = "discard"
            self.reason = (
                f"--neutral needs outputs identical to the kept commit's, got {self.kept_verdict}"
            )
        self.status = status
        self._record()
        if status not in ("keep", "keep-neutral"):
            self._revert()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return status

    def summary(self) -> dict[str, Any]:
        d = self.decision
        return {
            "n": self.number,
            "commit": self.head,
            "status": self.status,
            "verdict": self.verdict if self.status not in ("rejected", "crash", "timeout") else "",
            "description": self.description,
            "reason": self.reason,
            "gain": d.gain if d else None,
            "gain_lo": d.gain_lo if d else None,
            "gain_hi": d.gain_hi if d else None,
            "speedup": d.speedup if d else None,
            "pairs": len(self.session.pairs),
            "rounds": self.details.get("rounds", 0),
            "seconds": round(self.session.seconds, 1),
            "time": self.session.breakdown(),
            "draws": self.details["draws"],
        }

    def _record(self) -> None:
        from harness.bench.protocol import Measurement
        from harness.bench.runner import Outcome

        top = self.bench.top
        top.run.tag = self.state.tag
        top.run.description = f"{self.description} | {self.reason}"
        clock = self.clock
        cand = [t.value(clock) for p in self.session.pairs for t in p.candidate]
        m = Measurement(timing=self.bench.spec.TIMING, elapsed=cand, samples=list(cand))
        metrics: dict[str, float] = {}
        d = self.decision
        if d is not None:
            metrics.update(
                gain=d.gain, gain_lo=d.gain_lo, gain_hi=d.gain_hi, speedup=d.speedup,
                pairs=float(len(self.session.pairs)), decision_s=self.session.seconds,
            )  # fmt: skip
            kept = [t.value(clock) for p in self.session.pairs for t in p.kept]
            metrics["kept_median_s"] = sorted(kept)[len(kept) // 2]
        if self.candidate_outputs is not None:
            try:
                data = self.bench.load()
                metrics.update(self.method.quality(self.candidate_outputs, data))
            except Exception as exc:  # quality is a report, never a reason to lose the row
                metrics["quality_error"] = 1.0
                print(
                    f"loop: quality metrics failed ({type(exc).__name__}: {exc})", file=sys.stderr
                )
        metrics = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        hashes = {"crash": "CRASH", "timeout": "TIMEOUT"}
        outcome = Outcome(
            status=self.status,
            output_hash=hashes.get(self.status, self.details.get("output_hash", "")),
            verdict=self.verdict if self.status not in ("rejected", "crash", "timeout") else "",
            measurement=m,
            metrics=metrics,
        )
        self.bench.overrides = list(self.state.overrides)
        self.bench.record(outcome)

    def _revert(self) -> None:
        patch = self.dir / f"{self.number:03d}-{self.head[:8]}-{self.status}.patch"
        gitops.save_patch(self.repo, self.state.kept, self.head, patch)
        gitops.reset_to(self.repo, self.state.kept)
        print(f"saved {patch}; branch reset to {self.state.kept[:12]}", flush=True)
