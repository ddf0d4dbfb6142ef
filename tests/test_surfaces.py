"""The shipped methods' editable surfaces pass the loop's own import check as they stand.

Otherwise the first commit of a night that touches such a file is rejected for an import it did
not add (seen in the scVI night of issue 18: staging.py's lazy ``import h5py`` was undeclared).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.optimize.surface import declared_imports, import_violations

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted((ROOT / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("method_yaml", METHODS, ids=[p.stem for p in METHODS])
def test_editable_files_import_only_declared_packages(method_yaml):
    allowed = declared_imports((ROOT / "pyproject.toml").read_text())
    editable = yaml.safe_load(method_yaml.read_text()).get("editable") or []
    assert editable, f"{method_yaml.name}: no editable surface"
    for rel in editable:
        bad = import_violations((ROOT / rel).read_text(), allowed)
        assert not bad, f"{rel}: {bad}"
