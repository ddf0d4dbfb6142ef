"""The report's figures: a loop's progress, a sweep (time and headline quality against a swept
key, one line per method · dataset · other swept values), an Optuna study's trials."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.reporting.rows import number, overrides, quality, quality_name, short

TIME_LABEL = "elapsed_s (s, median of the timed runs)"
KEPT = ("baseline", "keep", "keep-neutral")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def group_of(row: dict[str, str]) -> str:
    return f"{row.get('method') or '?'} · {row.get('dataset') or '?'}"


def plot_progress(rows: list[dict[str, str]], path: Path, title: str) -> None:
    """Every run as a point by status; a running best per method · dataset (never across)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    styles = {
        "baseline": ("tab:blue", "s", 60, "baseline"),
        "keep": ("tab:green", "o", 70, "kept"),
        "keep-neutral": ("tab:olive", "o", 50, "kept (neutral)"),
        "discard": ("0.6", "o", 25, "discarded"),
        "rejected": ("tab:orange", "x", 30, "rejected"),
        "run": ("0.3", ".", 30, "run"),
    }
    times = [number(r["elapsed_s"]) for r in rows]
    finite = [t for t in times if t is not None]
    top = max(finite) * 1.1 if finite else 1.0
    groups = sorted({group_of(r) for r in rows})
    several = len(groups) > 1  # then the colour is the method · dataset, the marker the status
    for status, (color, marker, size, label) in styles.items():
        pts = [(i, t, r) for i, (r, t) in enumerate(zip(rows, times, strict=True))
               if r["status"] == status and t is not None]  # fmt: skip
        if not pts:
            continue
        colors = [f"C{groups.index(group_of(r)) % 10}" for _, _, r in pts] if several else color
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=colors, marker=marker, s=size,
                   label=label, zorder=3, edgecolors="0.2" if several else None)  # fmt: skip
    failed = [i for i, r in enumerate(rows) if r["status"] in ("crash", "timeout", "killed")]
    if failed:
        ax.scatter(failed, [top] * len(failed), c="tab:red", marker="x", s=50,
                   label="crash / timeout / killed", zorder=3)  # fmt: skip
    for n, group in enumerate(groups):
        best, xs, ys = float("inf"), [], []
        for i, (r, t) in enumerate(zip(rows, times, strict=True)):
            if group_of(r) != group:
                continue
            if r["status"] in KEPT and t is not None:
                best = min(best, t)
            if best < float("inf"):
                xs.append(i)
                ys.append(best)
        if xs:
            label = f"running best · {group}" if several else "running best"
            color = f"C{n % 10}" if several else "tab:green"
            ax.step(xs, ys, where="post", lw=1.5, label=label, c=color)
    ax.set_xlabel("run (results.tsv order)")
    ax.set_ylabel(TIME_LABEL)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if several:  # the colours: one per method · dataset
        for n, group in enumerate(groups):
            ax.scatter([], [], c=f"C{n % 10}", marker="s", s=30, label=group)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _save(fig, path)


def _value(row: dict[str, str], key: str) -> str | None:
    return overrides(row).get(key) or (row.get(key) or None)


def plot_sweep(
    rows: Sequence[dict[str, str]], param: str, keys: Sequence[str], path: Path, title: str
) -> None:
    """Time (and the headline quality, when recorded) against ``param``; one line per
    combination of the other ``keys`` (labelled ``key=value``)."""
    others = [k for k in keys if k != param]
    xs = [_value(r, param) for r in rows]
    if not any(x is not None for x in xs):
        raise UserError(f"report: no rows with {param}=... in this selection")
    numeric = all(number(x) is not None for x in xs if x is not None)
    order = list(dict.fromkeys(x for x in xs if x is not None))
    series: dict[str, list[tuple[float, float | None, float | None]]] = defaultdict(list)
    for r, x in zip(rows, xs, strict=True):
        t = number(r["elapsed_s"])
        if x is None or t is None:
            continue
        label = ", ".join(_value(r, k) or "default" for k in others)  # keys: the legend title
        q = quality(r)
        pos = float(x) if numeric else float(order.index(x))
        series[label or "all runs"].append((pos, t, q[1] if q else None))
    qname = quality_name(rows)
    plt = _pyplot()
    panels = 2 if qname else 1
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels + 0.8), sharex=True, squeeze=False)
    for n, (label, pts) in enumerate(sorted(series.items())):
        pts.sort()
        style = dict(marker="o", label=label, c=f"C{n % 10}")
        axes[0][0].plot([p[0] for p in pts], [p[1] for p in pts], **style)
        if qname:
            qp = [(p[0], p[2]) for p in pts if p[2] is not None]
            if qp:
                axes[1][0].plot(*zip(*qp, strict=True), **style)
    ax_t = axes[0][0]
    ax_t.set_ylabel(TIME_LABEL)
    ax_t.set_title(title)
    spread = [p[1] for pts in series.values() for p in pts]
    if spread and min(spread) > 0 and max(spread) / min(spread) >= 10:
        ax_t.set_yscale("log")
    bottom = axes[-1][0]
    if numeric:
        vals = [float(x) for x in order]
        if min(vals) > 0 and max(vals) / min(vals) >= 10:
            bottom.set_xscale("log")
    else:
        bottom.set_xticks(range(len(order)), order)
    bottom.set_xlabel(param)
    if qname:
        axes[1][0].set_ylabel(f"{qname} (headline quality)")
    for (ax,) in axes:
        ax.grid(alpha=0.3, which="both")
    if len(series) > 1 or others:
        ax_t.legend(fontsize=8, title=", ".join(short(k, others) for k in others) or None)
    _save(fig, path)


def plot_study(storage: str, name: str, path: Path) -> None:
    """An Optuna study's trials: median time per trial, infeasible and failed ones marked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"report: no study {name!r} in {storage}") from None
    plt = _pyplot()
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
        ax.scatter(*zip(*bad, strict=True), c="tab:red", marker="x", s=40,
                   label="infeasible (verdict)")  # fmt: skip
    values = [v for _, v in ok + bad]
    if failed:
        top = max(values) * 1.1 if values else 1.0
        ax.scatter(failed, [top] * len(failed), c="0.4", marker="v", s=30, label="failed / pruned")
    print(f"study {name}: {len(study.trials)} trials ({len(ok)} feasible, {len(bad)} infeasible, "
          f"{len(failed)} failed or pruned)")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel(TIME_LABEL)
    ax.set_title(f"study {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
