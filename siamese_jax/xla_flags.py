"""The one XLA flag the project's programs set, and why.

XLA's CPU backend (jaxlib 0.10) hands this step's forward matmuls and input
gradients to YNNPACK by default, and its weight gradients to Eigen. Sending
them all to Eigen was faster on the development machine (2 cores of an AMD
EPYC with AVX-512). Measured in one process, interleaved, five repeats each:

  * the step's 8 matmuls alone (the benchmark's floor): 0.37-0.38 s per
    epoch all through Eigen, 0.43-0.44 s under the default;
  * a training epoch: 0.44-0.45 s against 0.50-0.53 s.

Not per matmul: alone, in a scan of 1,000, each of them is as fast or
faster through YNNPACK (256 x 784 x 128: 166 us against 198 us). The gain
is in the step as a whole; that it comes from not handing work between two
thread pools (YNNPACK's and Eigen's) every step is a guess, not measured.

So the `python -m experiments...` programs keep YNNPACK for reductions only:
`--xla_cpu_experimental_ynn_fusion_type=reduce`. Sending elementwise work to
YNNPACK as well made the epoch slower (0.60 s). Which library computes a
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
