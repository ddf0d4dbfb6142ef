"""Bad config and bad hardware: one line naming the key, exit != 0, nothing written."""

import pytest
import torch

CASES = [
    (["bench.warmup=0"], "bench.warmup"),
    (["bench.warmup=abc"], "bench.warmup"),
    (["bench.repeats=-3"], "bench.repeats"),
    (["bench.nope=1"], "bench.nope"),
    (["bench.baseline=sometimes"], "bench.baseline"),
    (["method.batch_size=0"], "method.batch_size"),
    (["method.step=big"], "method.step"),
    (["+method.bogus=1"], "method.bogus"),
    (["dataset.n_pixels=-5"], "dataset.n_pixels"),
    (["method=nosuchmethod"], "nosuchmethod"),
    (["hardware=nosuchhw"], "nosuchhw"),
    (["correctness.accept=[exact,maybe]"], "correctness.accept"),
    (["loop.min_pairs=17"], "loop.min_pairs"),  # more than loop.max_pairs (16)
    (["compare.min_pairs=17"], "compare.min_pairs"),
    (["loop.alpha=0.9"], "loop.alpha"),
    (["method=scvi", "dataset=spatial/synthetic"], "dataset=spatial/synthetic"),  # roles
    (["method=rctd", "dataset=cells/pbmc68k"], "method=rctd"),
    (["method.autocast=bf16"], "method.autocast"),  # RCTD supports no autocast
    (["hardware.autocast=fp16"], "autocast"),
]


@pytest.mark.parametrize(("args", "key"), CASES, ids=[c[1] + ":" + c[0][0] for c in CASES])
def test_config_error_is_one_line_and_writes_nothing(harness_cli, tmp_path, args, key):
    proc = harness_cli(*args)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and key in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "results" / "results.tsv").exists()
    assert not (tmp_path / "results" / "mlflow.db").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("profile", ["l40s", "h100"])
def test_gpu_profile_without_gpu_is_a_clear_error(harness_cli, tmp_path, profile):
    proc = harness_cli(f"hardware={profile}")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"hardware={profile}" in lines[0], proc.stderr
    assert not (tmp_path / "results" / "results.tsv").exists()


HINTS = [
    (["method=cellbender", "method.epoch=3"], "`method.epochs`"),
    (["method=scbert", "method.epochs=3"], "`method.epochs_a` or `method.epochs_b`"),
    (["bench.warmpu=2"], "`bench.warmup`"),
    (["+method.batch_sise=3"], "`method.batch_size`"),  # the schema's error path
    (["metod.mode=full"], "`method.mode`"),
]


@pytest.mark.parametrize(("args", "guess"), HINTS, ids=[h[0][-1] for h in HINTS])
def test_unknown_key_suggests_the_closest_valid_key(harness_cli, args, guess):
    proc = harness_cli(*args)
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    key = args[-1].split("=")[0].lstrip("+")
    assert line.startswith(f"error: unknown key `{key}`; did you mean {guess}?"), line
    assert "Traceback" not in proc.stderr + proc.stdout


def test_no_hint_for_a_key_that_exists_or_nothing_close():
    from harness.config.compose import compose
    from harness.config.suggest import closest, with_hint

    cfg = compose(["method=scvi"])
    assert closest("method.max_epochs", cfg) is None  # exists: not an unknown-key error
    assert closest("method.zzzzqqq", cfg) == []
    assert closest("method.max_epoch", cfg) == ["method.max_epochs"]
    other = "config method.step: Value 'big' of type 'str' could not be converted to Float"
    assert with_hint(other, ["method.step=big"]) == other
