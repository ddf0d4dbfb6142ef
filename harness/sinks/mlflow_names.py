"""MLflow key names, valid by construction: every metric, param and tag key the harness logs
goes through :func:`mlflow_key` (no mlflow import here).

MLflow 3 accepts only alphanumerics, ``_ - . : /`` and spaces in a key, at most 250
characters, and refuses a key that would change as a file path (``a//b``, ``./a``, ``/a``,
``a/``, ``..``). Methods name their metrics freely (``recall_text_to_cell@1``); the sink maps
``@k`` to ``_at_k`` (``recall_at_1``, the common spelling), ``%`` to ``pct`` and any other
character to ``_``, and normalises the path. Names that are already valid are unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MAX_KEY_LEN = 250
_ALLOWED = re.compile(r"[A-Za-z0-9_\-. :/]")
_WORDS = {"@": "_at_", "%": "pct"}


def _digest(raw: str) -> str:
    return hashlib.sha1(raw.encode()).hexdigest()[:8]


def mlflow_key(raw: str) -> str:
    """``raw`` as a key MLflow accepts (unchanged when it already is one)."""
    text = "".join(ch if _ALLOWED.fullmatch(ch) else _WORDS.get(ch, "_") for ch in str(raw))
    text = "/".join(part for part in text.split("/") if part not in ("", ".", "..")) or "_"
    if len(text) > MAX_KEY_LEN:  # cut, and keep distinct names distinct
        text = f"{text[: MAX_KEY_LEN - 9].rstrip('/')}_{_digest(str(raw))}"
    return text


def mlflow_keys(names: Iterable[str]) -> dict[str, str]:
    """Raw name → key for a batch of names; two names that would meet on one key are kept
    apart (a name that had to change gets a suffix from a hash of its raw name)."""
    raws = list(dict.fromkeys(str(n) for n in names))
    valid = [r for r in raws if mlflow_key(r) == r]  # valid names keep their key
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for raw in valid + [r for r in raws if mlflow_key(r) != r]:
        key = mlflow_key(raw)
        if taken.get(key, raw) != raw:
            key = mlflow_key(f"{key[: MAX_KEY_LEN - 9]}_{_digest(raw)}")
        taken[key] = raw
        out[raw] = key
    return out
