"""Fresh inputs for timed rounds, made by the judge: no worker holds one outside a timed request.

The judge draws the dataset fields (a new seed), loads the data itself — its own, start-commit
code — and writes it to a file; each worker's timed ``prepare`` request reads that file (its
SHA-256 checked first), checks and prepares it. So a candidate never sees a round's input before
the clock runs: a worker that loaded the input in an untimed request could do the whole run
there (from a profile hook or a patched library call) and replay it inside the timed one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.fsio import atomic_write
from harness.optimize.workers import Timing


@dataclass(frozen=True)
class InputFile:
    path: Path
    sha256: str

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def write_input(dataset: Any, fields: dict[str, Any], directory: Path) -> InputFile:
    """Load ``dataset`` (a validated dataset config) with ``fields`` replaced — in this
    process — and write it for the workers."""
    from harness.config.schema import check_ranges
    from harness.config.validate import locate

    cfg = dataclasses.replace(dataset, **fields)
    check_ranges(cfg, "dataset.")
    data = locate(cfg._target_, "dataset._target_")(cfg)
    blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(blob).hexdigest()
    path = Path(directory) / f"input-{digest[:16]}.pkl"
    atomic_write(path, blob)
    return InputFile(path, digest)


def prepared_run(worker: Any, inp: InputFile) -> Timing:
    """Read, check and prepare ``inp``, then run it — both requests timed from outside."""
    a = worker.timed("prepare", path=str(inp.path), sha256=inp.sha256)
    return a + worker.timed("time")
