"""Several processes, one run: JAX's distributed runtime under the data-parallel mesh.

    python -m experiments.mnist_siamese --coordinator HOST:PORT --num-processes N --process-id I ...
    python -m experiments.mnist_siamese --distributed auto ...   # SLURM, Open MPI, TPU pods

`initialize` joins the processes into one JAX system before any
computation: the mesh spans every process's devices and training is the
same data-parallel program (gloo on CPU). Every process loads the data;
only process 0 writes the workdir, which must be on a filesystem all see.

Failures are bounded in time: an unreachable coordinator fails after
`timeout_s` naming the address; a dead peer fails the next all-reduce at
once, and the others name the kept checkpoint and exit 1; a hung peer is
caught by the heartbeat after `heartbeat_s` (30 s, JAX's is 100). JAX
aborts from C++ (exit 134) when the coordinator never answers (so processes
other than 0 probe its port first) and when the shutdown barrier fails (so
a run that lost a peer leaves with `os._exit(1)`; its files are complete).
"""

import dataclasses
import socket
import time

import jax

from siamese_jax.core.errors import ConfigError, SiameseJaxError

DEFAULT_TIMEOUT_S = 60
DEFAULT_HEARTBEAT_S = 30


class DistributedError(SiameseJaxError):
  """The processes could not form (or lost) their distributed system."""


@dataclasses.dataclass(frozen=True)
class Options:
  """How this process joins the others: "HOST:PORT", N processes and its id, or `auto`."""

  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False
  timeout_s: int = DEFAULT_TIMEOUT_S
  heartbeat_s: int = DEFAULT_HEARTBEAT_S

  @property
  def enabled(self) -> bool:
    return self.auto or self.coordinator is not None

  def validate(self) -> None:
    """Raises ConfigError (a usage error) for flags that cannot work together."""
    given = [self.coordinator, self.num_processes, self.process_id]
    if self.auto:
      if any(v is not None for v in given):
        raise ConfigError(
          "--distributed auto detects the coordinator, process count and id itself; drop "
          "--coordinator, --num-processes and --process-id, or drop --distributed auto."
        )
    elif any(v is not None for v in given) and any(v is None for v in given):
      raise ConfigError(
        "Multi-process training needs all of --coordinator HOST:PORT, --num-processes N and "
        "--process-id I (or --distributed auto on a cluster JAX detects)."
      )
    if self.coordinator is not None:
      host, sep, port = self.coordinator.rpartition(":")
      if not sep or not host or not port.isdigit():
        raise ConfigError(
          f"--coordinator {self.coordinator!r} is not HOST:PORT, e.g. 127.0.0.1:12355."
        )
      if self.num_processes < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {self.num_processes}.")
      if not 0 <= self.process_id < self.num_processes:
        raise ConfigError(
          f"--process-id {self.process_id} is out of range for --num-processes "
          f"{self.num_processes}: use 0..{self.num_processes - 1}."
        )
    if self.timeout_s < 1 or self.heartbeat_s < 1:
      raise ConfigError("--distributed-timeout must be >= 1 second.")


def initialize(options: Options) -> None:
  """Joins the system if enabled: ConfigError for bad flags, DistributedError if unreachable."""
  options.validate()
  if not options.enabled:
    return
  where = "the coordinator JAX detects" if options.auto else f"coordinator {options.coordinator}"
  if options.coordinator is not None and options.process_id != 0:
    # JAX aborts the whole process (from C++, past any Python handler) when
    # the coordinator never answers, so look for it here first.
    _wait_for(options.coordinator, options.timeout_s, options.process_id)
  try:
    jax.distributed.initialize(
      coordinator_address=options.coordinator,
      num_processes=options.num_processes,
      process_id=options.process_id,
      initialization_timeout=options.timeout_s,
      heartbeat_timeout_seconds=options.heartbeat_s,
    )
  except Exception as e:  # jax raises XlaRuntimeError/RuntimeError/ValueError here
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(
      f"Process {options.process_id if options.process_id is not None else '?'} could not join "
      f"{where} within {options.timeout_s} s ({first[:300]}). Start process 0 first (it hosts "
      "the coordinator), check that every process was given the same --coordinator address "
      "and --num-processes and that the port is reachable from here, or raise "
      "--distributed-timeout."
    ) from None


def _wait_for(address: str, timeout_s: float, process_id: int) -> None:
  """Waits until a TCP connection to `address` opens, or raises DistributedError."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(
          f"Process {process_id} could not reach the coordinator at {address} within "
          f"{timeout_s} s ({e.strerror or e}). Start process 0 first (it hosts the "
          "coordinator), check that every process was given the same --coordinator "
          "HOST:PORT and that the port is reachable from here, or raise "
          "--distributed-timeout."
        ) from None
      time.sleep(0.2)


def lost_peer(error: Exception, workdir: str) -> DistributedError:
  """The error for a collective that failed because another process went away."""
  first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
  return DistributedError(
    f"Process {jax.process_index()} of {jax.process_count()}: a collective failed, most "
    f"likely because another process died ({first}). The last good checkpoint is kept in "
    f"{workdir}; restart every process with the same flags and --resume."
  )


def is_writer() -> bool:
  """Whether this process writes the workdir: process 0 only."""
  return jax.process_index() == 0
