"""RCTD against rctd-py (GPL-3.0 peer, run out of process by benchmarks/rctd_peer.py).

Slow, and skipped unless the optional peer is installed (``pip install -e .[peers]``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("rctd") is None, reason="rctd-py not installed"),
]


def test_concordance_with_rctd_py(tmp_path, table_cache):
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "rctd_peer.py"), "compare",
        "--n-pixels", "300", "--n-genes", "200", "--n-types", "4", "--modes", "full,doublet",
        "--sigma", "estimate,shared", "--workdir", str(tmp_path), "--cache", str(table_cache),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert len(rows) == 4
    for row in rows:
        assert row["sigma_ours"] == row["sigma_peer"]
        assert row["pixel_mask_agreement"] == 1.0
        assert row["dominant_agreement"] >= 0.999 and row["max_abs_dw"] <= 1e-5
        if row["mode"] == "doublet":
            assert row["spot_class_agreement"] >= 0.99
