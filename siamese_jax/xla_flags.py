"""The one XLA flag the project's programs set, and why.

XLA's CPU backend (jaxlib 0.10) hands this step's forward matmuls and input
gradients to YNNPACK by default, and its weight gradients to Eigen. Sending
them all to Eigen made both the step's matmul floor and a training epoch
faster on the development machine (2 cores of an AMD EPYC with AVX-512),
though each matmul alone is as fast or faster through YNNPACK: the gain is
in the step as a whole. The figures, and the guess at why, are in
docs/performance.md.

So the `python -m experiments...` programs keep YNNPACK for reductions only:
`--xla_cpu_experimental_ynn_fusion_type=reduce`. Sending elementwise work to
YNNPACK as well made the epoch slower. Which library computes a
matmul decides its rounding, so runs are deterministic either way but not
bitwise equal between the two settings; results.json records XLA_FLAGS.

The programs set it before JAX starts a backend, and leave XLA_FLAGS alone
when it already names the option. The library itself never changes the
environment: code that imports siamese_jax and wants a program's numbers bit
for bit sets the same flag before its first JAX computation.
"""

import os
from collections.abc import MutableMapping

OPTION = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{OPTION}=reduce"


def use_project_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
  """Appends FLAG to XLA_FLAGS unless it already sets the option.

  Call before the first JAX computation: XLA reads XLA_FLAGS once, when JAX
  starts its backends.
  """
  flags = environ.get("XLA_FLAGS", "")
  if OPTION not in flags:
    environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
