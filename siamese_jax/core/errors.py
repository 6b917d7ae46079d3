"""Errors that the library raises on purpose.

Every expected failure (bad data, bad configuration, a workdir that cannot be
used) is a subclass of `SiameseJaxError`. Its message says in one paragraph
what went wrong and how to fix it, so entry points can print it without a
traceback. Anything else escaping the library is a bug.
"""


class SiameseJaxError(Exception):
  """Base class for expected, user-fixable failures."""


class DataError(SiameseJaxError):
  """The dataset is missing, corrupt, or cannot be fetched."""


class InputError(DataError, ValueError):
  """Arrays handed to a trained model that it cannot take (shape, dtype, range).

  Also a `ValueError`, as for `ConfigError`.
  """


class ConfigError(SiameseJaxError, ValueError):
  """A configuration value or flag is invalid.

  Also a `ValueError`, so code that validates inputs the usual Python way
  catches it.
  """


class WorkdirError(SiameseJaxError):
  """The run directory cannot be used (unwritable, or holds another run)."""


class NonFiniteLossError(SiameseJaxError):
  """Training produced a NaN or infinite loss."""
