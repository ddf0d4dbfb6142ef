"""What a candidate commit may change and import — checked before any of its code runs.

- Files: every changed path must match the frozen ``editable`` surface (exact paths or fnmatch
  globs). The one exception is the tuned-parameters file of the loop's method and hardware
  (``conf/tuned/<method>/<hardware>.yaml``, written by ``harness.tune``), and only when every
  key it sets is in the frozen search space (which by definition is not the task).
- Imports: every module an edited Python file imports (at any depth of the file) must belong to
  the standard library, to the method's own EDITABLE modules, to ``harness.api`` (the contract;
  other harness modules are internals), or to a package the project declares in
  ``pyproject.toml`` — not merely one that happens to be installed as somebody's dependency.
  Never a read-only module (the evaluation, the data, the glue: an editable module that imports
  ``methods.<m>.check`` could patch the grading in its own process) nor another method's.
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


def editable_modules(editable: Iterable[str]) -> set[str]:
    """Module names of the editable surface's Python files (``methods/x/y.py`` → ``methods.x.y``)."""
    return {
        p.removesuffix(".py").replace("/", ".")
        for p in editable
        if p.endswith(".py") and not any(c in p for c in "*?[")
    }


def _package_of(path: str) -> str:
    return ".".join(path.removesuffix(".py").split("/")[:-1])


def imported_modules(source: str, path: str = "") -> set[str]:
    """Module names imported anywhere in ``source``: ``from a import b`` yields ``a.b`` too (b
    may be a module), relative imports resolved against ``path``'s package, and
    ``importlib.import_module``/``__import__`` calls with a constant name."""
    names: set[str] = set()
    package = _package_of(path) if path else ""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base:
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def import_violations(
    source: str, allowed: Iterable[str], editable: Iterable[str] = (), path: str = ""
) -> list[str]:
    """Imports of ``source`` outside the stdlib, ``harness.api``, the declared packages
    (``allowed``) and the method's ``editable`` modules."""
    ok = set(allowed) | set(sys.stdlib_module_names) | {"__future__"}
    editable = set(editable)
    packages = {m.rsplit(".", 1)[0] for m in editable} | {"methods"}
    bad: list[str] = []
    for module in sorted(imported_modules(source, path)):
        top = module.split(".", 1)[0]
        if top == "harness":
            if module not in ("harness", "harness.api") and not module.startswith("harness.api."):
                bad.append(f"{module} (harness internals; methods may import harness.api only)")
        elif top == "methods":
            if module in packages or module in editable:
                continue
            if editable and module.rsplit(".", 1)[0] in editable:
                continue  # ``from methods.m.model import Name``: a name of an editable module
            if not editable:
                continue  # no surface given: the methods tree as a whole
            bad.append(
                f"{module} (read-only or another method's module; edited files may "
                "import their method's editable modules only)"
            )
        elif top not in ok:
            bad.append(f"{top} (not declared in pyproject.toml)")
    return bad
