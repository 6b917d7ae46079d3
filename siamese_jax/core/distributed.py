"""Several processes, one run: JAX's distributed runtime under the data-parallel mesh.

    python -m experiments.mnist_siamese --coordinator HOST:PORT --num-processes N --process-id I ...
    python -m experiments.mnist_siamese --distributed auto ...   # SLURM, Open MPI, TPU pods

`initialize` calls `jax.distributed.initialize` before any JAX computation.
The processes then form one JAX system: `jax.devices()` lists every
process's devices, `parallel.data_mesh()` spans them, and training is the
same data-parallel `train_chunk` as on one machine (on CPU the gradient
all-reduce goes over gloo). Every process loads the same data.

Who writes: only process 0 writes the workdir (config.json, metrics.jsonl,
checkpoints, results.json, pictures). The others write nothing there and
print one line to stderr. A resumed run reads the checkpoint in every
process, so the workdir must be on a filesystem all processes see (any
shared filesystem; on one machine, any directory).

Failures, bounded in time:

* a process that cannot reach the coordinator gives up after
  `timeout_s` (`initialization_timeout`, 60 s by default here, `--distributed-timeout`)
  with an error naming the address;
* when a process dies mid-run, the next gradient all-reduce of the others
  fails at once (gloo: "connection reset by peer"); they print which
  checkpoint is kept and how to resume, and exit with code 1. A process
  that hangs instead of dying is noticed by the runtime's heartbeat after
  `heartbeat_s` (`heartbeat_timeout_seconds`, 30 s here instead of JAX's
  100), and JAX then aborts the others itself (exit code 134).

JAX ends a process from C++ (abort, exit code 134, past any Python handler)
in two cases: the coordinator never answers during `initialize`, and the
runtime's shutdown barrier fails at exit because a process is gone. The
first is why processes other than 0 look for the coordinator's port
themselves before calling JAX; the second is why a run that lost a process
leaves with `os._exit(1)` once its message is printed (every file it wrote
is complete: writes are atomic). Process 0 alone, waiting for processes
that never start, is ended by JAX after `timeout_s` plus a few seconds with
exit code 134 and JAX's own log line ("DEADLINE_EXCEEDED ... RegisterTask").
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
  """How this process joins the others.

  Attributes:
    coordinator: "HOST:PORT" of process 0's coordinator service.
    num_processes: N, the number of processes.
    process_id: this process's index, 0..N-1.
    auto: let JAX detect all three (SLURM, Open MPI, TPU); the others must
      then be None.
    timeout_s: how long to wait for the other processes to join.
    heartbeat_s: how long a silent process is tolerated before the run stops.
  """

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
  """Joins the distributed system (a no-op when `options` is not enabled).

  Raises:
    ConfigError: bad flags.
    DistributedError: the coordinator could not be reached in time.
  """
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
