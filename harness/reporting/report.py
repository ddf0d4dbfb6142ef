"""``python -m harness.report``: tables of runs and loop attempts, and progress/sweep plots.

    python -m harness.report                       # methods × datasets (latest run of each: time
                                                   # and headline quality), the runs, progress.png
    python -m harness.report tag=nov22             # one loop's attempts -> results/progress.png
    python -m harness.report sweep=<id>            # the sweep's runs grouped by method, dataset
                                                   # and swept keys; time and quality vs a key
    python -m harness.report sweep=<id> param=dataset.n_pixels   # ... against this key
    python -m harness.report study=<name> [storage=<url>]       # an Optuna study's trials

Options are ``key=value``: ``tag``, ``sweep``, ``param`` (default: the first numeric swept
key), ``study``, ``storage``, ``paths.results`` (default results), ``out`` (the PNG path).
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.core.errors import UserError, report_user_errors
from harness.reporting.plots import plot_progress, plot_study, plot_sweep
from harness.reporting.rows import (
    job_table,
    matrix,
    number,
    overrides,
    quality,
    quality_name,
    render,
    varying_keys,
)
from harness.sinks.results_tsv import read_rows

_OPTIONS = ("tag", "sweep", "param", "study", "storage", "paths.results", "out")


def parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in _OPTIONS:
            raise UserError(
                f"report: unknown option '{arg}'; use {', '.join(k + '=' for k in _OPTIONS)}"
            )
        opts[key] = value
    return opts


def loop_attempts(results: Path, tag: str) -> list[dict]:
    """The loop's attempts (gain, interval, pairs) when ``tag`` is a loop of this results dir."""
    import json

    path = results / "loop" / f"{tag}.json"
    if not tag or not path.exists():
        return []
    try:
        return list(json.loads(path.read_text()).get("attempts", []))
    except (OSError, ValueError):
        return []


def print_attempts(attempts: list[dict]) -> None:
    """Per attempt: status, verdict, gain with its interval, pairs used, decision time."""
    print(
        f"{'#':>4} {'status':12} {'verdict':8} {'gain [interval]':>26} {'pairs':>5} {'s':>5}  description"
    )
    for a in attempts:
        gain = a.get("gain")
        interval = (
            f"{gain:+.1%} [{a['gain_lo']:+.1%}, {a['gain_hi']:+.1%}]" if gain is not None else "-"
        )
        print(
            f"{a['n']:>4} {a['status']:12} {a.get('verdict') or '-':8} {interval:>26} "
            f"{a.get('pairs', 0):>5} {a.get('seconds', 0):>5.0f}  {a['description'][:60]}"
        )


def print_table(rows: list[dict[str, str]]) -> None:
    """One line per run: when, what (method · dataset), the judgement, time and quality."""
    header = ["#", "timestamp", "method", "dataset", "commit", "status", "verdict", "elapsed_s"]
    header += [quality_name(rows) or "quality", "description"]
    qname = header[-2]
    body = []
    for i, r in enumerate(rows, 1):
        q = quality(r)
        cell = "-" if q is None else f"{q[1]:.4g}" if q[0] == qname else f"{q[0]}={q[1]:.4g}"
        body.append([str(i), r["timestamp"][:19], r["method"] or "-", r["dataset"] or "-",
                     r["commit"][:8] or "-", r["status"], r["verdict"] or "-",
                     r["elapsed_s"] or "-", cell, r["description"][:60]])  # fmt: skip
    print(render(header, body, indent=""))


def sweep_keys(rows: list[dict[str, str]]) -> list[str]:
    """What tells a sweep's runs apart: method, dataset (when they differ), the varying keys."""
    keys = [k for k in ("method", "dataset") if len({r[k] for r in rows}) > 1]
    return list(dict.fromkeys([*keys, *varying_keys(rows)]))


def _sort_key(row: dict[str, str], keys: list[str]) -> tuple:
    values = [overrides(row).get(k) or row.get(k) or "" for k in keys]
    return tuple((0, number(v), "") if number(v) is not None else (1, 0.0, v) for v in values)


def run(argv: list[str]) -> None:
    """Print the table and write the plot."""
    opts = parse(argv)
    results = Path(opts.get("paths.results", "results"))
    if "study" in opts:
        storage = opts.get("storage") or f"sqlite:///{results.resolve()}/optuna.db"
        out = Path(opts.get("out", results / f"study-{opts['study']}.png"))
        plot_study(storage, opts["study"], out)
        print(f"wrote {out}")
        return
    rows = read_rows(results / "results.tsv")
    if not rows:
        raise UserError(f"report: no rows in {results / 'results.tsv'}")
    if "sweep" in opts:
        rows = [r for r in rows if f"sweep:{opts['sweep']}" in r["tag"].split()]
        if not rows:
            raise UserError(f"report: no rows of sweep {opts['sweep']} in {results}")
        keys = sweep_keys(rows)
        rows.sort(key=lambda r: _sort_key(r, keys))
        numeric = [k for k in keys if all(number(overrides(r).get(k)) is not None for r in rows)]
        param = opts.get("param") or (numeric or keys or [""])[0]
        if not param:
            raise UserError("report: nothing varies in this sweep; name the key: param=<key>")
        out = Path(opts.get("out", results / f"sweep-{opts['sweep']}.png"))
        print(f"sweep {opts['sweep']}: {len(rows)} run(s), grouped by {', '.join(keys) or '-'}")
        print(job_table(rows, keys))
        plot_sweep(rows, param, keys, out, f"sweep {opts['sweep']}: time vs {param}")
    else:
        tags = [r["tag"] for r in rows if r["tag"] and not r["tag"].startswith(("sweep:", "tune:"))]
        tag = opts.get("tag") or (tags[-1] if tags else "")
        selected = [r for r in rows if r["tag"] == tag] if tag else rows
        if not selected:
            raise UserError(f"report: no rows with tag={tag}")
        out = Path(opts.get("out", results / "progress.png"))
        if not tag:
            print("methods × datasets: the latest timed run of each, time · headline quality")
            print(matrix(rows) + "\n")
        print_table(selected)
        attempts = loop_attempts(results, tag)
        if attempts:
            print(f"\nloop {tag}: the attempts as judged")
            print_attempts(attempts)
        plot_progress(selected, out, f"loop {tag}" if tag else "all runs")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    return report_user_errors(lambda: run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
