"""Console progress: rate-limited epoch lines with s/epoch, values and time left; warm-up
lines marked as warm-up; long phases announced with their duration."""

from __future__ import annotations

from harness.bench.contract import RunContext
from harness.bench.progress import EpochProgress, duration, phase


def test_epoch_lines_are_rate_limited_and_show_pace_and_time_left() -> None:
    lines: list[str] = []
    progress = EpochProgress(lines.append, every_s=3600)
    progress.plan(stageA=3, stageB=6)
    for step in range(1, 7):
        phase_name = "stageA" if step <= 3 else "stageB"
        progress.epoch(step, phase_name, 2.0, {"loss": 1.0 / step, "kl_weight": 0.5})
    # first and last of each phase only (the interval is an hour)
    assert [line.split("  ")[0] for line in lines] == [
        "stageA epoch 1/3", "stageA epoch 3/3", "stageB epoch 4/6", "stageB epoch 6/6",
    ]  # fmt: skip
    assert "2 s/epoch" in lines[0] and "loss 1" in lines[0] and "kl_weight 0.5" in lines[0]
    assert lines[0].endswith("~10 s left")  # 5 epochs to the end of stage B at 2 s
    assert "left" not in lines[-1]


def test_warmup_lines_say_so_and_promise_nothing() -> None:
    lines: list[str] = []
    progress = EpochProgress(lines.append, warmup=True)
    progress.plan(train=400)
    progress.epoch(1, "train", 0.5, {"elbo": 3.0})
    assert lines == ["warm-up: train epoch 1  0.5 s/epoch  elbo 3"]


def test_the_harness_prints_at_each_mark_through_the_context() -> None:
    lines: list[str] = []
    ctx = RunContext(say=lines.append)
    ctx.view().plan(train=2)  # editable code may plan too
    ctx.mark(1, "train", loss=0.25)
    ctx.mark(2, "train", loss=0.125)
    assert lines[0].startswith("train epoch 1/2") and "loss 0.25" in lines[0]
    assert lines[-1].startswith("train epoch 2/2") and "loss 0.125" in lines[-1]
    assert [p.key for p in ctx.series][:2] == ["train/epoch_s", "train/loss"]
    silent = RunContext()  # no console: marks still record
    silent.mark(1, "train", loss=1.0)
    assert len(silent.series) == 2


def test_phase_announces_start_and_duration() -> None:
    lines: list[str] = []
    with phase("posterior of 10 cells", lines.append):
        pass
    assert lines[0] == "posterior of 10 cells …"
    assert lines[1].startswith("posterior of 10 cells: done in ")
    assert duration(59.6) == "1 min 00 s" and duration(3725) == "1 h 02 min"
