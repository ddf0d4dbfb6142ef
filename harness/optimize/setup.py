"""``loop start``: freeze the task and the judgement, store the loop's own baselines."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.core.errors import UserError
from harness.optimize import gitops
from harness.optimize.isolation import isolated_command, write_launcher
from harness.optimize.state import LoopState, sha256_file


def _check_fields(dataset: Any, draw: int) -> dict[str, Any]:
    variant = dataset.check(draw)
    if variant is None:
        raise UserError(
            f"loop start: dataset {dataset.name} cannot draw fresh inputs (no seed); the loop "
            "needs a dataset that can (a synthetic one, or a file dataset with subsampling)"
        )
    return {
        f.name: getattr(variant, f.name)
        for f in dataclasses.fields(variant)
        if getattr(variant, f.name) != getattr(dataset, f.name)
    }


def _baselines(state: LoopState, overrides: list[str], judge_tree: Path, launch: Any) -> None:
    """The start commit's outputs on the benchmark input and on the check input."""
    from harness.optimize.workers import Worker, WorkerFailed

    log = state.dir / "baseline-worker.log"
    try:
        worker = Worker(judge_tree, overrides, log, state.frozen["timeout_s"], launch)
    except WorkerFailed as exc:
        raise UserError(f"loop start: the baseline worker failed ({exc}); see {log}") from None
    try:
        worker.request("time")
        worker.request("save", path=str(state.baseline_path))
        worker.request("input", fields=state.frozen["check_fields"])
        worker.request("time")
        worker.request("save", path=str(state.check_path))
    except WorkerFailed as exc:
        raise UserError(f"loop start: the baseline worker failed ({exc}); see {log}") from None
    finally:
        worker.close()


def freeze(repo: Any, tag: str, branch: str, overrides: list[str]) -> None:
    """The body of ``loop start`` (arguments already checked)."""
    from harness.config.compose import compose_checked
    from harness.optimize.attempt import fresh_fields
    from harness.optimize.pairs import fresh_draw
    from harness.optimize.surface import declared_imports

    cfg, valid = compose_checked(overrides)
    top, method, dataset = valid.top, valid.method, valid.dataset
    results = (Path.cwd() / top.paths.results).resolve()
    fresh_fields(dataset, 1)  # refuses a dataset that cannot draw fresh inputs
    root = Path(repo.working_tree_dir)
    pyproject = (root / "pyproject.toml").read_text() if (root / "pyproject.toml").exists() else ""
    previous = repo.active_branch.name if not repo.head.is_detached else repo.head.commit.hexsha
    head = repo.head.commit.hexsha
    judge_tree = results / "worktrees" / f"{tag}-judge"
    state = LoopState(tag=tag, branch=branch, base=head, kept=head, overrides=list(overrides))
    loop_cfg = OmegaConf.to_container(cfg.loop, resolve=True)
    state.frozen = {
        "results": str(results),
        "judge_tree": str(judge_tree),
        "method": method.name,
        "hardware": top.hardware.name,
        "editable": list(method.editable),
        "readonly": list(method.readonly),
        "search_space": dict(method.search_space),
        "tuned_file": f"conf/tuned/{method.name}/{top.hardware.name}.yaml",
        "accept": list(top.correctness.accept),
        "declared_imports": declared_imports(pyproject),
        "check_fields": _check_fields(dataset, fresh_draw()),
        "launch": loop_cfg["launch"],
        "timeout_s": top.bench.timeout_s,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    repo.git.checkout("-b", branch)
    print(f"loop {tag}: baselines on {branch} @ {head[:12]}", flush=True)
    try:
        gitops.worktree_at(repo, judge_tree, head)
        worker_overrides = [
            *overrides,
            f"paths.results={results}",
            f"paths.cache={(Path.cwd() / top.paths.cache).resolve()}",
            "bench.baseline=off",
            "tracking.mlflow=false",
        ]
        if top.loop.launch.threads > 0:
            worker_overrides.append(f"hardware.threads={top.loop.launch.threads}")
        from harness.optimize.attempt import launch_for, tuned_override

        worker_overrides += tuned_override(repo, head, state.frozen)

        _baselines(state, worker_overrides, judge_tree, launch_for(top.loop.launch))
        state.frozen["baselines"] = {
            p.name: sha256_file(p) for p in (state.baseline_path, state.check_path)
        }
        # the recorded baseline run, also from the start commit's worktree: a commit made while
        # start runs must not be what results.tsv and MLflow call the baseline
        base_args = [*overrides, "bench.baseline=off"]
        base_args += [
            f"paths.results={results}",
            f"paths.cache={(Path.cwd() / top.paths.cache).resolve()}",
        ]
        base_args += ["run.status=baseline", f"run.tag={tag}", "run.description=loop baseline"]
        cmd = isolated_command(judge_tree, "harness", base_args)
        if subprocess.run(cmd, cwd=judge_tree).returncode != 0:
            raise UserError("loop start: the baseline benchmark failed")
    except BaseException:
        repo.git.checkout(previous)
        repo.git.branch("-D", branch)
        shutil.rmtree(state.dir, ignore_errors=True)
        if (judge_tree / ".git").exists():
            repo.git.worktree("remove", "--force", str(judge_tree))
        raise
    state.save(gitops.git_dir(repo))
    launcher = write_launcher(state.dir / "judge", judge_tree, tag)
    shown = os.path.relpath(launcher, Path.cwd())
    print(
        f"loop {tag}: started; commit one change, then: python {shown} try -d '...' "
        "(the judge's own entry point; `python -m harness.loop try` re-executes into it too)"
    )
