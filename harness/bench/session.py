"""A prepared benchmark in this process, for scripts that drive a method directly (peer
comparisons, scaling benchmarks): compose + validate + load + prepare, nothing recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Prepared:
    """The method object, its dataset, its prepared state and the runtime."""

    method: Any
    data: Any
    state: Any
    runtime: Any
    config: Any  # the validated config objects (top, method, dataset)


def prepared(overrides: list[str]) -> Prepared:
    """``python -m harness <overrides>`` up to the end of ``prepare`` (UserError on a bad
    config or input)."""
    import sys

    from harness.bench.runner import Benchmark
    from harness.config.compose import compose_checked
    from harness.sinks.console import Reporter

    cfg, valid = compose_checked(overrides)
    bench = Benchmark(cfg, valid, overrides, Reporter(stream=sys.stderr, rich=False))
    method, data, state = bench.setup()
    return Prepared(method, data, state, bench.runtime, valid)
