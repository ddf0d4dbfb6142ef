"""Tamper evidence for the read-only code inside a process that also runs editable code.

A candidate's editable module runs arbitrary Python in the benchmark process: at import time
it could replace a read-only function (the tolerance check, the hashing, a work-counting hook,
the worker's reply) or torch's hook machinery the counters rely on. :class:`Seal` compares, on
demand, every function and method that the read-only source files define with the code
compiled afresh from those files on disk (which the loop's surface check guarantees are the
start commit's), and torch's hooked entry points with the objects recorded when the seal was
taken — before any method code was imported. :meth:`Seal.problems` lists what differs; the
harness refuses to report a run whose seal is broken.

This is evidence, not a sandbox: code that rewrites interpreter memory (``ctypes``) is beyond
it. The loop's judge therefore never relies on the candidate's process for a hash or a verdict
(it recomputes them from raw outputs in its own process), only for work counts, and those are
backed by tolerances calibrated so that skipped work shows in the outputs.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import importlib
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _code_digest(code: types.CodeType) -> str:
    """A digest of a code object: bytecode, names and constants (nested code recursively)."""
    h = hashlib.sha256()
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(_code_digest(const).encode())
        else:
            h.update(repr(const).encode())
    return h.hexdigest()


def _compiled(path: Path) -> dict[str, str]:
    """``qualname -> digest`` of every function and method the source file defines."""
    top = compile(path.read_text(), str(path), "exec")
    found: dict[str, str] = {}
    stack = [top]
    while stack:
        code = stack.pop()
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                if "<" not in const.co_qualname:  # named functions (not lambdas, comprehensions)
                    found[const.co_qualname] = _code_digest(const)
                stack.append(const)
    return found


def _function(obj: Any) -> types.FunctionType | None:
    """The plain function behind a module or class attribute: a function, a static or class
    method, a property's getter, numba's dispatcher (``py_func``) or ``functools``' caches
    (``__wrapped__``) — looked through only for those exact types, so an arbitrary callable
    carrying the original function in such an attribute is not taken for it."""
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, types.FunctionType):
        return obj
    kind = type(obj)
    if kind.__module__.startswith("numba") and "Dispatcher" in kind.__name__:
        inner = getattr(obj, "py_func", None)
    elif kind.__module__ == "functools" and kind.__name__ == "_lru_cache_wrapper":
        inner = getattr(obj, "__wrapped__", None)
    else:
        return None
    return inner if isinstance(inner, types.FunctionType) else None


def _imports(path: Path, module: str) -> list[tuple[str, str, str]]:
    """``(bound name, module, attribute or "")`` of the file's top-level imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, str, str]] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out.append((a.asname, a.name, ""))
                else:
                    top = a.name.split(".")[0]
                    out.append((top, top, ""))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            out.extend((a.asname or a.name, base, a.name) for a in node.names if a.name != "*")
    return out


def _imported(source: str, attr: str) -> Any:
    """The object an import statement binds now (None when it cannot be told)."""
    mod = sys.modules.get(source)
    if mod is None:
        return None
    if not attr:
        return mod
    value = getattr(mod, attr, None)
    return value if value is not None else sys.modules.get(f"{source}.{attr}")


def _bound(module: types.ModuleType, qualname: str) -> Any:
    """The object bound at ``qualname`` in the module (``f`` or ``Class.f``), or None."""
    obj: Any = module
    for part in qualname.split("."):
        obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
        if obj is None:
            return None
    return obj


def _probe() -> None:
    """A function to decorate, to learn the decorators' wrapper code."""


def known_wrappers() -> frozenset[types.CodeType]:
    """The code of the wrappers that the decorators read-only files use put around a function
    (contextlib, torch's grad modes, Hydra's main): only these are looked through."""
    import contextlib

    made: list[Any] = [contextlib.contextmanager(_probe)]
    torch = sys.modules.get("torch")
    if torch is not None:
        made += [torch.no_grad()(_probe), torch.inference_mode()(_probe)]
    if "hydra" in sys.modules:
        made.append(sys.modules["hydra"].main(version_base="1.3")(_probe))
    return frozenset(f.__code__ for f in made if isinstance(f, types.FunctionType))


def _check_bound(
    name: str, qualname: str, obj: Any, digest: str, wrappers: frozenset[types.CodeType]
) -> str | None:
    if isinstance(obj, type):  # a class body: its methods are checked one by one
        if obj.__module__ != name or obj.__qualname__ != qualname:
            return f"{name}.{qualname} was replaced by {obj.__module__}.{obj.__qualname__}"
        return None
    fn = _function(obj)
    while isinstance(fn, types.FunctionType) and fn.__code__ in wrappers:
        fn = getattr(fn, "__wrapped__", None)
    if not isinstance(fn, types.FunctionType):
        return None if obj is None else f"{name}.{qualname} is no longer a function"
    if _code_digest(fn.__code__) != digest:
        return f"{name}.{qualname} differs from its source file"
    return None


_TORCH_TARGETS = (
    ("torch.nn.modules.module", "Module.__call__"),
    ("torch.nn.modules.module", "Module._call_impl"),
    ("torch._tensor", "Tensor.backward"),
    ("torch.autograd", "backward"),
    ("torch.optim.optimizer", "Optimizer.profile_hook_step"),
    ("torch.optim.optimizer", "_global_optimizer_post_hooks"),
    ("torch.nn.modules.module", "_global_forward_pre_hooks"),
)


def _target(module: str, path: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def torch_targets() -> dict[str, Any]:
    """The torch entry points the work counters hook into (identity recorded at seal time)."""
    return {f"{m}.{p}": _target(m, p) for m, p in _TORCH_TARGETS}


class Seal:
    """Read-only modules (by name, with their source files) and torch's hooked entry points."""

    def __init__(
        self, modules: dict[str, Path], with_torch: bool = True, process_hooks: bool = True
    ) -> None:
        """``process_hooks``: also refuse profile/trace hooks and added gc callbacks (off for a
        plain benchmark, which a user may run under a debugger)."""
        self.process_hooks = process_hooks
        self.modules = {name: Path(path).resolve() for name, path in modules.items()}
        self.wrappers = known_wrappers()
        self.gc_callbacks = list(gc.callbacks)
        self.expected = {name: _compiled(path) for name, path in self.modules.items()}
        self.imports = {name: _imports(path, name) for name, path in self.modules.items()}
        self.torch = torch_targets() if with_torch else {}

    @classmethod
    def for_files(
        cls, root: Path, files: Iterable[str], with_torch: bool = True, process_hooks: bool = True
    ) -> Seal:
        """A seal over every ``harness`` module plus the given read-only method files."""
        root = Path(root).resolve()
        mods: dict[str, Path] = {}
        for path in sorted((root / "harness").rglob("*.py")):
            mods[_module_name(root, path)] = path
        for rel in files:
            if rel.endswith(".py") and (root / rel).exists():
                mods[_module_name(root, root / rel)] = root / rel
        return cls(mods, with_torch, process_hooks)

    def _process_hooks(self) -> list[str]:
        """Interpreter hooks through which code runs unasked (on every call, or collection)."""
        import threading

        bad = []
        if sys.getprofile() is not None or threading.getprofile() is not None:
            bad.append("a profile hook is set (sys/threading.setprofile)")
        if sys.gettrace() is not None or threading.gettrace() is not None:
            bad.append("a trace hook is set (sys/threading.settrace)")
        added = [cb for cb in gc.callbacks if not any(cb is old for old in self.gc_callbacks)]
        if added:
            bad.append(f"gc callbacks were added ({len(added)})")
        return bad

    def problems(self) -> list[str]:
        """What differs from the files on disk and the recorded torch objects (empty: intact)."""
        bad: list[str] = []
        for name, expected in self.expected.items():
            module = sys.modules.get(name)
            if module is None:
                continue  # never imported in this process: nothing of it ran
            if Path(getattr(module, "__file__", "") or "").resolve() != self.modules[name]:
                bad.append(f"{name} was loaded from {getattr(module, '__file__', '?')}")
                continue
            for qualname, digest in expected.items():
                if "<" in qualname or qualname.count(".") > 1:
                    continue  # closures are made at run time; nested classes are rare
                obj = _bound(module, qualname)
                if obj is None:
                    continue  # a name the module rebinds or deletes itself (e.g. a helper)
                why = _check_bound(name, qualname, obj, digest, self.wrappers)
                if why:
                    bad.append(why)
            namespace = vars(module)
            for bound, source, attr in self.imports[name]:
                expected_obj = _imported(source, attr)
                if expected_obj is not None and namespace.get(bound) is not expected_obj:
                    bad.append(f"{name}.{bound} no longer is {source}.{attr or bound}")
            invariants = namespace.get("_seal_invariants")
            if callable(invariants) and not bad:
                bad.extend(invariants())
        if self.process_hooks:
            bad.extend(self._process_hooks())
        for (module, path), obj in zip(_TORCH_TARGETS, self.torch.values(), strict=False):
            try:
                now = _target(module, path)
            except (AttributeError, ImportError):
                now = None
            if now is not obj:
                bad.append(f"{module}.{path} was replaced")
        return bad


def _module_name(root: Path, path: Path) -> str:
    rel = path.resolve().relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_root() -> Path:
    """The checkout this process runs the harness from (the parent of ``harness/``)."""
    return Path(__file__).resolve().parents[2]
