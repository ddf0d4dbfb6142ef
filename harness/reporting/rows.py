"""Reading results.tsv rows for reports: their overrides, the keys that vary, the headline
quality, and the plain-text tables (a sweep's jobs; methods × datasets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

# overrides that never tell runs apart in a report
_IGNORED = ("run.", "paths.", "tracking.", "hydra.", "hydra/")


def overrides(row: dict[str, str]) -> dict[str, str]:
    """The row's command-line overrides as ``{key: value}`` (``+``/``~`` prefixes dropped)."""
    out: dict[str, str] = {}
    for item in row.get("overrides", "").split():
        key, sep, value = item.partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def varying_keys(rows: Sequence[dict[str, str]]) -> list[str]:
    """Override keys whose value differs between the rows (first-seen order)."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        for k, v in overrides(r).items():
            seen.setdefault(k, set()).add(v)
    keys = [k for k, vs in seen.items() if not k.startswith(_IGNORED)]
    return [k for k in keys if len(seen[k]) > 1 or any(k not in overrides(r) for r in rows)]


def number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def quality(row: dict[str, str]) -> tuple[str, float] | None:
    """The row's headline quality metric ``(name, value)``, when it has one."""
    name, _, value = row.get("quality", "").partition("=")
    v = number(value)
    return (name, v) if name and v is not None else None


def quality_name(rows: Iterable[dict[str, str]]) -> str:
    """The most common headline metric among ``rows`` ("" when none has one)."""
    names = Counter(q[0] for q in map(quality, rows) if q)
    return names.most_common(1)[0][0] if names else ""


def short(key: str, keys: Sequence[str]) -> str:
    """``method.batch_size`` → ``batch_size`` unless another key ends the same way."""
    tail = key.rsplit(".", 1)[-1]
    return tail if sum(k.rsplit(".", 1)[-1] == tail for k in keys) == 1 else key


def render(header: Sequence[str], body: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A left-aligned text table (numbers right-aligned)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            f"{c:>{w}}" if number(c) is not None else f"{c:<{w}}"
            for c, w in zip(cells, widths, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(header), *(line(r) for r in body)])


def _elapsed(row: dict[str, str]) -> str:
    v = number(row.get("elapsed_s"))
    return f"{v:.3g}" if v is not None else "-"


def job_table(rows: Sequence[dict[str, str]], keys: Sequence[str]) -> str:
    """One line per job: the swept values, status, verdict, elapsed_s and headline quality."""
    qname = quality_name(rows)
    header = ["#", *(short(k, keys) for k in keys), "status", "verdict", "elapsed_s"]
    header.append(qname or "quality")
    body = []
    for i, r in enumerate(rows, 1):
        ov = overrides(r)
        values = [ov.get(k, r.get(k, "") or "(default)") for k in keys]
        q = quality(r)
        cell = "-" if q is None else f"{q[1]:.4g}" if q[0] == qname else f"{q[0]}={q[1]:.4g}"
        body.append([str(i), *values, r["status"], r["verdict"] or "-", _elapsed(r), cell])
    return render(header, body)


def matrix(rows: Sequence[dict[str, str]]) -> str:
    """Methods (× hardware) × datasets: the latest timed run of each, ``time s · quality``
    (the quality is the method's headline metric, named in the row label)."""
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in rows:
        if number(r.get("elapsed_s")) is not None and r.get("method"):
            latest[(r["method"], r["hardware"], r["dataset"])] = r
    if not latest:
        return "  (no timed runs)"
    datasets = sorted({k[2] for k in latest})
    lines = sorted({k[:2] for k in latest})
    several_hw = len({hw for _, hw in lines}) > 1
    header, body = ["method", *datasets], []
    for method, hw in lines:
        mine = [latest[(method, hw, d)] for d in datasets if (method, hw, d) in latest]
        qname = quality_name(mine)
        label = method + (f" @ {hw}" if several_hw else "") + (f" ({qname})" if qname else "")
        cells = [label]
        for d in datasets:
            r = latest.get((method, hw, d))
            if r is None:
                cells.append("·")
                continue
            q = quality(r)
            qtext = (
                "" if q is None else f" · {q[1]:.3g}" if q[0] == qname else f" · {q[0]}={q[1]:.3g}"
            )
            cells.append(f"{_elapsed(r)} s{qtext}")
        body.append(cells)
    return render(header, body)
