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
