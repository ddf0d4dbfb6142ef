"""The method contract: what every ``methods/<name>/`` provides to the harness.

A method is a class named by ``_target_`` in ``conf/method/<name>.yaml``; its config schema is
the dataclass named by ``_schema_`` (a subclass of :class:`harness.schema.MethodConfig`). The
harness never refers to a method by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from harness.runtime import Runtime

Outputs = Mapping[str, Any]  # name -> torch.Tensor | np.ndarray


class Method(Protocol):
    """Lifecycle: ``check_inputs`` → ``prepare`` (untimed) → ``run`` × (W + R) → ``compare``."""

    def __init__(self, cfg: Any, runtime: Runtime) -> None: ...

    def check_inputs(self, data: Mapping[str, Any]) -> None:
        """Validate the dataset's AnnData objects; raise ``UserError`` with one line."""

    def prepare(self, data: Mapping[str, Any]) -> Any:
        """Untimed: move data to the device, load cached tables. Returns the run state."""

    def run(self, state: Any) -> Outputs:
        """Timed: compute the outputs (name → array/tensor) from the prepared state."""

    def compare(
        self, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        """Tolerance tier: metrics against a baseline's outputs and whether they pass."""

    def quality(
        self, outputs: Mapping[str, np.ndarray], data: Mapping[str, Any]
    ) -> dict[str, float]:
        """Metrics against the dataset's ground truth, when it has one (else ``{}``)."""


# Optional hooks, used when a method defines them:
#   series(self) -> dict[str, list[float]]
#       per-step metrics of the last run (e.g. per-epoch ELBO), logged to MLflow with steps.
#   write_output(self, outputs, data, path: pathlib.Path) -> None
#       write the method's result file when the user sets ``run.output=<path>``.
