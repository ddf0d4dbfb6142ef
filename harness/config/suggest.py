""" "Did you mean": the closest valid key for an unknown one (``method.epoch=3`` → ``epochs``).

Used only on the error path: the config is composed again without the offending override, so
the candidates are the keys that exist for this method and dataset — the YAML's and those of
their ``_schema_`` dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from typing import Any

_UNKNOWN = (
    re.compile(r"Could not override '(?P<key>[^']+)'"),  # Hydra: key=value on a struct node
    re.compile(r"Could not append to config\. An item is already at '(?P<key>[^']+)'"),
    re.compile(r"config (?P<key>[\w.]+): Key '[^']+' not in '"),  # schema: +method.bogus=1
)


def unknown_key(message: str) -> str | None:
    """The full key an "unknown key" error names, or None for other errors."""
    if "not in" not in message and "Could not" not in message:
        return None
    for pattern in _UNKNOWN:
        match = pattern.search(message)
        if match:
            return match.group("key")
    return None


def _keys(node: Any) -> list[str]:
    """The keys a node holds, plus its ``_schema_`` dataclass's fields (method, dataset)."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return []
    keys = [str(k) for k in node]
    schema = node.get("_schema_")
    if isinstance(schema, str):
        try:
            from hydra.utils import get_object

            cls = get_object(schema)
            keys += [f.name for f in dataclasses.fields(cls)]
        except Exception:
            pass
    return [k for k in dict.fromkeys(keys) if not k.startswith("_")]


def _near(word: str, options: list[str]) -> list[str]:
    """The options nearest to ``word``: a case-insensitive equal, or the close matches that
    score within 0.05 of the best (``epochs`` → ``epochs_a``, ``epochs_b``)."""
    same = [o for o in options if o.lower() == word.lower()]
    if same:
        return same[:1]
    scored = sorted((-difflib.SequenceMatcher(None, word, o).ratio(), o) for o in options)
    best = -scored[0][0] if scored else 0.0
    return [o for r, o in scored if -r >= max(0.6, best - 0.05)][:3]


def closest(key: str, cfg: Any) -> list[str] | None:
    """The valid keys nearest to ``key`` in ``cfg`` (each dotted part matched in turn; [] when
    nothing is close), or None when ``key`` exists."""
    from omegaconf import DictConfig

    prefixes, changed = [[]], False
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        options = _keys(node)
        if part in options:
            matches = [part]
        else:
            matches, changed = _near(part, options), True
            if not matches:
                return []
            if i < len(parts) - 1:
                matches = matches[:1]  # follow the best match down
        prefixes = [[*p, m] for p in prefixes for m in matches]
        node = node.get(matches[0]) if isinstance(node, DictConfig) else None
    return [".".join(p) for p in prefixes] if changed else None


def with_hint(message: str, overrides: Sequence[str]) -> str:
    """An unknown-key error as ``unknown key `K`; did you mean `X`?``; others unchanged."""
    key = unknown_key(message)
    if not key:
        return message
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        from harness.config.compose import compose

        guesses = closest(key, compose(rest))
    except Exception:  # the other overrides do not compose either: no hint
        guesses = None
    if guesses is None:  # the key exists: another kind of error
        return message
    where = "python -m harness --cfg job lists the keys"
    if not guesses:
        return f"unknown key `{key}` ({where})"
    options = " or ".join(f"`{g}`" for g in guesses)
    return f"unknown key `{key}`; did you mean {options}? ({where})"
