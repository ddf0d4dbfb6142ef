"""results.tsv: atomic appends from many processes, header handling, sanitised cells."""

import multiprocessing as mp
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.sinks.results_tsv import COLUMNS, HEADER, append_row, format_row, read_rows

N_PROCS, N_ROWS = 8, 50


def _writer(path: str, proc: int) -> None:
    for i in range(N_ROWS):
        append_row(
            Path(path),
            {
                "method": f"m{proc}",
                "description": f"proc {proc} row {i} " + "x" * 2000,  # long rows
                "elapsed_s": i * 0.5,
                "status": "run",
            },
        )


def test_concurrent_writers_lose_and_garble_nothing(tmp_path):
    path = tmp_path / "results.tsv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), p)) for p in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    assert len(lines) == 1 + N_PROCS * N_ROWS
    assert all(len(line.split("\t")) == len(COLUMNS) for line in lines)
    seen = {(r["method"], r["description"].split()[3]) for r in read_rows(path)}
    assert len(seen) == N_PROCS * N_ROWS


def test_cells_are_sanitised_and_unknown_columns_refused():
    line = format_row({"description": "a\tb\nc", "elapsed_s": 1.23456789})
    assert line.count("\t") == len(COLUMNS) - 1 and line.endswith("\n")
    assert "a b c" in line and "1.23457" in line
    with pytest.raises(KeyError):
        format_row({"nope": 1})


def test_foreign_header_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(UserError, match="header"):
        append_row(path, {"status": "run"})
    assert path.read_text() == "a\tb\n1\t2\n"


def test_file_without_the_quality_column_is_migrated_once(tmp_path):
    path = tmp_path / "results.tsv"
    old = [c for c in COLUMNS if c != "quality"]
    first = {c: "" for c in old} | {"method": "rctd", "status": "baseline", "elapsed_s": "1.5"}
    path.write_text("\t".join(old) + "\n" + "\t".join(first[c] for c in old) + "\n")
    append_row(path, {"method": "scvi", "status": "run", "quality": "elbo_heldout=812.3"})
    assert path.read_text().splitlines()[0] + "\n" == HEADER
    a, b = read_rows(path)
    assert (a["method"], a["elapsed_s"], a["quality"]) == ("rctd", "1.5", "")
    assert (b["method"], b["quality"]) == ("scvi", "elbo_heldout=812.3")
