"""``python -m harness new-method NAME [ROLE]``: a new method written from the template.

Copies ``examples/template_method`` (README "Adding a method") into the project under NAME —
``methods/NAME/``, ``conf/method/NAME.yaml`` and its own dataset ``conf/dataset/<group>/NAME.yaml``
— with the class names, module paths, the role (default ``cells``) and the role's data keys
(``ROLE_KEYS``) replaced. Nothing is overwritten: an existing method or dataset of that name
is refused in one line (exit 2).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from harness.config.schema import ROLE_GROUPS, ROLE_KEYS
from harness.core.errors import UserError, report_user_errors

TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "template_method"
USAGE = (
    "usage: python -m harness new-method NAME [ROLE]   (ROLE: one of "
    + ", ".join(ROLE_GROUPS)
    + "; default cells)"
)
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def render(name: str, role: str) -> dict[str, str]:
    """The new method's files (path relative to the project root → text)."""
    if not _NAME.fullmatch(name):
        raise UserError(f"new-method {name!r}: a name is lower case letters, digits and _")
    if role not in ROLE_GROUPS:
        raise UserError(f"new-method: role {role!r} is not one of {list(ROLE_GROUPS)}")
    if not TEMPLATE.is_dir():
        raise UserError(f"new-method: the template is missing ({TEMPLATE})")
    group = ROLE_GROUPS[role]
    out: dict[str, str] = {}
    for path in sorted(TEMPLATE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        rel = str(path.relative_to(TEMPLATE))
        rel = rel.replace("conf/dataset/cells/template", f"conf/dataset/{group}/template")
        text = path.read_text().replace("cells/template", f"{group}/template")
        text = text.replace('ROLE: ClassVar[str] = "cells"', f'ROLE: ClassVar[str] = "{role}"')
        keys = ", ".join(f'"{k}"' for k in ROLE_KEYS[role]) + (
            "," if len(ROLE_KEYS[role]) == 1 else ""
        )
        text = text.replace(
            'KEYS: tuple[str, ...] = ("cells",)', f"KEYS: tuple[str, ...] = ({keys})"
        )
        text = re.sub(r"\bTemplate", _camel(name), text)
        out[re.sub(r"\btemplate\b", name, rel)] = re.sub(r"\btemplate\b", name, text)
    return out


def write(root: Path, name: str, role: str = "cells") -> list[str]:
    """Write the new method under ``root``; the relative paths written."""
    files = render(name, role)
    taken = [rel for rel in files if (root / rel).exists()]
    if taken or (root / "methods" / name).exists():
        raise UserError(f"new-method {name}: {(taken or [f'methods/{name}'])[0]} already exists")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return sorted(files)


def main(argv: list[str]) -> int:
    """The command: write the files, say what to do next."""
    if not argv or argv[0] in ("-h", "--help") or len(argv) > 2:
        print(USAGE, file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2

    def run() -> int:
        name, role = argv[0], argv[1] if len(argv) > 1 else "cells"
        for rel in write(Path.cwd(), name, role):
            print(f"wrote {rel}")
        print(f"next: python -m harness method={name} hardware=cpu   (README 'Adding a method')")
        return 0

    return report_user_errors(run)
