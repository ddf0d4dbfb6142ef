"""The judge on the real methods: planted regressions in every method's editable code are
`wrong` (discarded, the branch reset, the diff saved); a legitimate numerical change is not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from harness.sinks.results_tsv import read_rows
from tests.loop.loop_repo import LoopRepo

COMMON = ["hardware=cpu", "tracking.mlflow=false", "bench.timeout_s=300", "loop.rounds=2",
          "loop.min_pairs=1", "loop.max_pairs=1", "loop.warm_kept=false"]  # fmt: skip
RCTD = ["method=rctd", "method.mode=doublet", "dataset.n_pixels=300", "dataset.n_genes=200",
        "dataset.n_types=4", "method.sigma_override=100", *COMMON]  # fmt: skip
SCVI = ["method=scvi", "dataset.n_cells=500", "dataset.n_genes=80", "method.max_epochs=40",
        "method.batch_size=64", "bench.warmup_steps=2", *COMMON]  # fmt: skip
WRAP = """

_planted = solve_irwls


def solve_irwls(*args, **kwargs):
    kwargs["{key}"] = {value}
    return _planted(*args, **kwargs)
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Iterator[LoopRepo]:
    r = LoopRepo(tmp_path_factory.mktemp("judgerepo"))
    yield r


def _start(repo: LoopRepo, tag: str, overrides: list[str]) -> None:
    repo.git("checkout", "-q", "main")
    proc = repo.loop("start", f"tag={tag}", *overrides, timeout=600)
    assert proc.returncode == 0, proc.stderr


def _plant(repo: LoopRepo, rel: str, old: str, new: str, tag: str) -> dict[str, str]:
    path = repo.root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    repo.write(rel, text.replace(old, new), f"planted: {new.strip()[:40]}")
    head = repo.head()
    proc = repo.loop("try", "-d", f"planted {rel}", timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    row = read_rows(repo.root / "results" / "results.tsv")[-1]
    state = json.loads((repo.root / "results" / "loop" / f"{tag}.json").read_text())
    assert repo.head() == state["kept"] != head or row["status"] in ("keep", "keep-neutral")
    return row


@pytest.mark.parametrize(
    ("rel", "old", "new"),
    [
        ("methods/rctd/doublet.py", "max_iter=max_iter, **solver_kw,", "max_iter=3, **solver_kw,"),
        # (qp_sweeps=10 is not planted here: with 4 types the QPs converge in ~10 sweeps and it
        # moved only 0-2 of 300 pixels past the tolerance, depending on the secret check input)
        ("methods/rctd/solver.py", "", WRAP.format(key="max_iter", value=5)),
        ("methods/rctd/solver.py", "", WRAP.format(key="min_change", value=2e-3)),
    ],
    ids=["final-fit-3-iterations", "full-fit-5-iterations", "min_change-2e-3"],
)
@pytest.mark.slow
def test_rctd_planted_regressions_are_wrong(repo, rel, old, new):
    if not (repo.root / "results" / "loop" / "rctd.json").exists():
        _start(repo, "rctd", RCTD)
    repo.git("checkout", "-q", "autoresearch/rctd")
    if not old:  # append a wrapper to the module
        old = (repo.root / rel).read_text()
        new = old + new
    row = _plant(repo, rel, old, new, "rctd")
    assert (row["status"], row["verdict"]) == ("discard", "wrong"), row["description"]


TRAIN, MODEL = "methods/scvi/train.py", "methods/scvi/model.py"
SCVI_PLANTED = {
    "skip 1 minibatch in 3": (
        TRAIN,
        "        for i, mb in enumerate(epochs(epoch, first), start=first):\n",
        "        for i, mb in enumerate(epochs(epoch, first), start=first):\n"
        "            if i % 3 == 2:\n                continue\n",
    ),
    "every 3rd update skipped": (
        TRAIN,
        "            optimizer.step()\n",
        "            if step % 3 != 2:\n                optimizer.step()\n",
    ),
    "half the epochs": (
        TRAIN,
        "range(start_epoch, schedule.max_epochs):",
        "range(start_epoch, schedule.max_epochs // 2):",
    ),
    "learning rate x2": (TRAIN, "(params, lr=lr,", "(params, lr=2 * lr,"),
    "dropout off": (
        MODEL,
        "self.dropout = nn.Dropout(dropout) if dropout > 0 else None",
        "self.dropout = None",
    ),
    "batch covariate ignored": (MODEL, "        if not self.n_cov:", "        if True:"),
}


@pytest.mark.slow
@pytest.mark.parametrize("change", list(SCVI_PLANTED))
def test_scvi_planted_regressions_are_wrong(repo, change):
    if not (repo.root / "results" / "loop" / "scvi.json").exists():
        _start(repo, "scvi", SCVI)
    repo.git("checkout", "-q", "autoresearch/scvi")
    rel, old, new = SCVI_PLANTED[change]
    row = _plant(repo, rel, old, new, "scvi")
    assert (row["status"], row["verdict"]) == ("discard", "wrong"), row["description"]


@pytest.mark.slow
def test_scvi_legitimate_numerics_are_not_wrong(repo):
    if not (repo.root / "results" / "loop" / "scvi.json").exists():
        _start(repo, "scvi", SCVI)
    repo.git("checkout", "-q", "autoresearch/scvi")
    row = _plant(repo, MODEL, "        self.fused = True", "        self.fused = False", "scvi")
    assert row["verdict"] in ("exact", "close"), row["description"]


# ---- the trainers that came later: one planted regression each, through the real loop -------
TINY_LOOP = {
    "cellbender": ["method=cellbender", "dataset.n_genes=80", "dataset.cells_per_type=40",
                   "dataset.n_droplets=600", "method.epochs=3", "bench.warmup_steps=2",
                   "method.posterior_samples=4", *COMMON],
    "scbert": ["method=scbert", "dataset.n_genes=40", "dataset.cells_per_type=30",
               "dataset.novel_cells=10", "method.epochs_a=1", "method.epochs_b=1", "method.dim=16",
               "method.hidden1=32", "method.hidden2=16", "method.nb_features=16",
               "method.prune_target=0.1", "bench.warmup_steps=2", *COMMON],
    "cellwhisperer": ["method=cellwhisperer", "dataset.n_cells=300", "dataset.n_genes=60",
                      "method.epochs=2", "method.batch_size=32", "method.projection=64",
                      "method.cell_hidden=32", "method.text_hidden=32", "method.max_tokens=32",
                      "bench.warmup_steps=2", *COMMON],
}  # fmt: skip
TRAINER_PLANTED = {
    # backward skipped on every other minibatch, optimizer.step() still called
    "cellbender": (
        "methods/cellbender/train.py",
        "            terms.loss.backward()\n",
        "            if step % 2 == 0:\n                terms.loss.backward()\n",
    ),
    "scbert": (
        "methods/scbert/train.py",
        "        loss.backward()\n",
        "        if step[0] % 2 == 0:\n            loss.backward()\n",
    ),
    # the learnable temperature frozen (it moves only ~3%: under the head tolerance)
    "cellwhisperer": (
        "methods/cellwhisperer/model.py",
        "        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))\n",
        "        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))\n"
        "        self.log_scale.requires_grad_(False)\n",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TRAINER_PLANTED))
def test_trainer_planted_regressions_are_wrong(repo, method):
    _start(repo, method, TINY_LOOP[method])
    rel, old, new = TRAINER_PLANTED[method]
    row = _plant(repo, rel, old, new, method)
    assert (row["status"], row["verdict"]) == ("discard", "wrong"), row["description"]
    assert "work_" in row["description"], row["description"]  # the counters caught it
