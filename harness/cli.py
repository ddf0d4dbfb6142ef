"""Console entry point (``harness`` / ``python -m harness``): ``list``, ``new-method``, or one
benchmark (a Hydra app) with configuration errors reported as one line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any


def _reraise(exc: BaseException) -> Any:
    raise exc


def _install_one_line_errors() -> None:
    """Make Hydra print config errors on one line (exit 2) instead of a multi-line report."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.config.compose import describe
    from harness.config.suggest import with_hint
    from harness.core.errors import UserError, print_error

    original: Callable[[Callable[[], Any]], Any] = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except (UserError, HydraException, OmegaConfBaseException) as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = describe(exc) if not isinstance(exc, UserError) else str(exc)
            print_error(with_hint(message, [a for a in sys.argv[1:] if not a.startswith("-")]))
            sys.exit(2)
        except Exception as exc:  # a real crash: Hydra's own report, traceback included
            return original(functools.partial(_reraise, exc))

    hydra_utils.run_and_report = run_and_report


def main() -> None:
    """``harness [list | new-method NAME [ROLE] | overrides...]``."""
    if sys.argv[1:2] == ["new-method"]:
        from harness.scaffold import main as new_method

        sys.exit(new_method(sys.argv[2:]))
    if sys.argv[1:2] == ["list"]:
        from harness.config.catalog import lines
        from harness.core.usage import wants_help

        if wants_help(sys.argv[2:]):
            print("usage: python -m harness list\n\nThe methods (role, timing, default dataset),")
            print("the datasets (role), the hardware profiles and the sweep presets.")
            return
        print("\n".join(lines()))
        return
    _install_one_line_errors()
    from harness.app import task

    task()
