"""``python -m harness.report``: a table of runs and loop attempts, and progress/sweep plots.

    python -m harness.report                       # all rows; plot the latest loop tag
    python -m harness.report tag=nov22             # one loop's attempts -> results/progress.png
    python -m harness.report sweep=<id> param=dataset.n_pixels   # time vs a swept parameter
    python -m harness.report study=<name> [storage=<url>]       # an Optuna study's trials

Options are ``key=value``: ``tag``, ``sweep``, ``param``, ``paths.results`` (default results),
``out`` (the PNG path).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from harness.core.errors import UserError, report_user_errors
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


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


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
    print(
        f"{'#':>4} {'timestamp':19} {'commit':8} {'status':9} {'verdict':16} {'elapsed_s':>10}  description"
    )
    for i, r in enumerate(rows, 1):
        print(
            f"{i:>4} {r['timestamp'][:19]:19} {r['commit'][:8]:8} {r['status']:9} {r['verdict']:16} "
            f"{r['elapsed_s']:>10}  {r['description'][:70]}"
        )


def plot_progress(rows: list[dict[str, str]], path: Path, title: str) -> None:
    """Every attempt as a point, kept ones (and the baseline) highlighted, running best line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    styles = {
        "baseline": ("tab:blue", "s", 60, "baseline"),
        "keep": ("tab:green", "o", 70, "kept"),
        "keep-neutral": ("tab:olive", "o", 50, "kept (neutral)"),
        "discard": ("0.6", "o", 25, "discarded"),
        "rejected": ("tab:orange", "x", 30, "rejected"),
        "run": ("0.3", ".", 30, "run"),
    }
    times = [_float(r["elapsed_s"]) for r in rows]
    finite = [t for t in times if t is not None]
    top = max(finite) * 1.1 if finite else 1.0
    for status, (color, marker, size, label) in styles.items():
        pts = [
            (i, t)
            for i, (r, t) in enumerate(zip(rows, times, strict=True))
            if r["status"] == status and t is not None
        ]
        if pts:
            ax.scatter(
                *zip(*pts, strict=True), c=color, marker=marker, s=size, label=label, zorder=3
            )
    failed = [i for i, r in enumerate(rows) if r["status"] in ("crash", "timeout")]
    if failed:
        ax.scatter(
            failed,
            [top] * len(failed),
            c="tab:red",
            marker="x",
            s=50,
            label="crash / timeout",
            zorder=3,
        )
    best, line = float("inf"), []
    for r, t in zip(rows, times, strict=True):
        if r["status"] in ("baseline", "keep", "keep-neutral") and t is not None:
            best = min(best, t)
        line.append(best if best < float("inf") else None)
    xs = [i for i, b in enumerate(line) if b is not None]
    if xs:
        ax.step(
            xs, [line[i] for i in xs], where="post", c="tab:green", lw=1.5, label="running best"
        )
    ax.set_xlabel("attempt")
    ax.set_ylabel("elapsed_s (median)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _override_value(row: dict[str, str], key: str) -> str | None:
    for item in row["overrides"].split():
        k, _, v = item.partition("=")
        if k.lstrip("+") == key:
            return v
    return None


def plot_sweep(rows: list[dict[str, str]], param: str, path: Path, title: str) -> None:
    """Median time against a swept parameter; one line per combination of the other overrides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        x, y = _override_value(r, param), _float(r["elapsed_s"])
        if x is None or y is None or _float(x) is None:
            continue
        rest = " ".join(
            o for o in r["overrides"].split() if not o.lstrip("+").startswith(param + "=")
        )
        series[rest].append((float(x), y))
    if not series:
        raise UserError(f"report: no rows with a numeric override {param}=... in this selection")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot(*zip(*pts, strict=True), marker="o", label=label[:60] or "(defaults)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel("elapsed_s (median)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_study(storage: str, name: str, path: Path) -> None:
    """An Optuna study's trials: median time per trial, infeasible and failed ones marked."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"report: no study {name!r} in {storage}") from None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ok, bad, failed = [], [], []
    for t in study.trials:
        if t.state.name != "COMPLETE":
            failed.append(t.number)
        elif t.user_attrs.get("run", {}).get("infeasible"):
            bad.append((t.number, t.value))
        else:
            ok.append((t.number, t.value))
    if ok:
        ax.scatter(*zip(*ok, strict=True), c="tab:green", s=30, label="feasible")
    if bad:
        ax.scatter(
            *zip(*bad, strict=True), c="tab:red", marker="x", s=40, label="infeasible (verdict)"
        )
    values = [v for _, v in ok + bad]
    if failed:
        top = max(values) * 1.1 if values else 1.0
        ax.scatter(failed, [top] * len(failed), c="0.4", marker="v", s=30, label="failed / pruned")
    print(f"study {name}: {len(study.trials)} trials ({len(ok)} feasible, {len(bad)} infeasible, "
          f"{len(failed)} failed or pruned)")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel("elapsed_s (median)")
    ax.set_title(f"study {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        if "param" not in opts:
            raise UserError("report: sweep=<id> needs param=<swept key>")
        out = Path(opts.get("out", results / f"sweep-{opts['sweep']}.png"))
        print_table(rows)
        plot_sweep(rows, opts["param"], out, f"sweep {opts['sweep']}")
    else:
        tags = [r["tag"] for r in rows if r["tag"] and not r["tag"].startswith(("sweep:", "tune:"))]
        tag = opts.get("tag") or (tags[-1] if tags else "")
        selected = [r for r in rows if r["tag"] == tag] if tag else rows
        if not selected:
            raise UserError(f"report: no rows with tag={tag}")
        out = Path(opts.get("out", results / "progress.png"))
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
