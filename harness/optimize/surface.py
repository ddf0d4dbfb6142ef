"""What a candidate commit may change and import — checked before any of its code runs.

- Files: every changed path must match the frozen ``editable`` surface (exact paths or fnmatch
  globs). The one exception is the tuned-parameters file of the loop's method and hardware
  (``conf/tuned/<method>/<hardware>.yaml``, written by ``harness.tune``), and only when every
  key it sets is in the frozen search space (which by definition is not the task).
- Imports: every module an edited Python file imports (at any depth of the file) must belong to
  the standard library, to ``methods``, to ``harness.api`` (the contract; other harness modules
  are internals), or to a package the project declares in ``pyproject.toml`` — not merely one
  that happens to be installed as somebody's dependency.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from collections.abc import Iterable
from typing import Any

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def declared_imports(pyproject_text: str) -> list[str]:
    """Top-level import names the project's declared dependencies provide (installed ones)."""
    from importlib.metadata import packages_distributions

    import tomllib

    deps = tomllib.loads(pyproject_text).get("project", {}).get("dependencies", [])
    declared = {_normalise(m.group(1)) for d in deps if (m := _NAME.match(d))}
    names = {
        module
        for module, dists in packages_distributions().items()
        if any(_normalise(d) in declared for d in dists)
    }
    return sorted(names)


def outside_surface(
    files: Iterable[str], editable: list[str], tuned: str | None = None
) -> list[str]:
    """Changed files not matched by any editable pattern (the tuned file aside)."""
    return [
        f for f in files if f != tuned and not any(fnmatch.fnmatchcase(f, pat) for pat in editable)
    ]


def tuned_violation(text: str, search_space: dict[str, Any]) -> str | None:
    """Why a tuned-parameters file may not be accepted (None: it sets search-space keys only)."""
    import yaml

    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        return f"unreadable YAML ({exc.__class__.__name__})"
    flat: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat.append(prefix.rstrip("."))

    walk(tree, "")
    allowed = {k if k.startswith("hardware.") else f"method.{k}" for k in search_space}
    bad = [k for k in flat if k not in allowed]
    return f"sets keys outside the frozen search space: {bad}" if bad else None


def imported_modules(source: str) -> set[str]:
    """Absolute module names imported anywhere in ``source`` (relative imports are the file's
    own package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def import_violations(source: str, allowed: Iterable[str]) -> list[str]:
    """Imports of ``source`` outside the stdlib, ``methods``, ``harness.api`` and ``allowed``."""
    ok = set(allowed) | set(sys.stdlib_module_names) | {"methods", "__future__"}
    bad: list[str] = []
    for module in sorted(imported_modules(source)):
        top = module.split(".", 1)[0]
        if top == "harness":
            if module not in ("harness", "harness.api"):
                bad.append(f"{module} (harness internals; methods may import harness.api only)")
        elif top not in ok:
            bad.append(f"{top} (not declared in pyproject.toml)")
    return bad
