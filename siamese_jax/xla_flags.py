"""The one XLA flag the project's programs set, and why.

XLA's CPU backend (jaxlib 0.10) gives this step's forward matmuls and input
gradients to YNNPACK and weight gradients to Eigen. All to Eigen made the
step and an epoch faster on the development machine, though each matmul
alone is not (docs/performance.md). So the programs keep YNNPACK for
reductions only: `--xla_cpu_experimental_ynn_fusion_type=reduce`. The
library computing a matmul decides its rounding: runs are deterministic
either way, not bitwise equal across settings, and results.json records
XLA_FLAGS. The library never changes the environment itself.
"""

import os
from collections.abc import MutableMapping

OPTION = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{OPTION}=reduce"


def use_project_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
  """Appends FLAG to XLA_FLAGS unless it sets the option; call before JAX starts a backend."""
  flags = environ.get("XLA_FLAGS", "")
  if OPTION not in flags:
    environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
