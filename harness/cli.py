"""Console entry point: Hydra's app with configuration errors reported as one line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any


def _reraise(exc: BaseException) -> Any:
    raise exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key where known."""
    from omegaconf.errors import OmegaConfBaseException

    parts = [_first_line(exc)]
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OmegaConfBaseException) and _first_line(cause) not in parts[0]:
        parts.append(_first_line(cause))
    key = getattr(cause, "full_key", None) or getattr(exc, "full_key", None)
    if key and key not in " ".join(parts):
        parts.insert(0, f"{key}:")
    return " ".join(parts)


def _install_one_line_errors() -> None:
    """Make Hydra print config errors on one line (exit 2) instead of a multi-line report."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.errors import UserError

    original: Callable[[Callable[[], Any]], Any] = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except (UserError, HydraException, OmegaConfBaseException) as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {describe(exc)}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Exception as exc:  # a real crash: Hydra's own report, traceback included
            return original(functools.partial(_reraise, exc))

    hydra_utils.run_and_report = run_and_report


def main() -> None:
    """``harness`` / ``python -m harness``."""
    _install_one_line_errors()
    from harness.app import task

    task()
