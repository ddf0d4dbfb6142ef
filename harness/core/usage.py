"""``-h`` / ``--help`` for every ``python -m harness.<command>`` entry point: the command's
module documentation, exit 0, before anything is parsed, composed or imported."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    """``-h``/``--help`` among the arguments (before a ``--``)."""
    args = list(argv)
    args = args[: args.index("--")] if "--" in args else args
    return any(a in HELP_FLAGS for a in args)


def help_text(module: ModuleType, command: str) -> str:
    """The module's documentation, led by the command it documents."""
    doc = inspect.cleandoc(module.__doc__ or "").strip()
    doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")  # reST roles, literals
    return f"{command}\n\n{doc}\n" if doc else f"{command}\n"


def run_command(module: ModuleType, command: str, main: Callable[..., Any] | None = None) -> int:
    """Print the help (exit 0) when asked for, else run ``main`` (the module's by default)."""
    if wants_help(sys.argv[1:]):
        print(help_text(module, command), end="")
        return 0
    result = (main or module.main)()
    return int(result or 0)
