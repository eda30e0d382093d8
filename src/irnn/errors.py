"""User-facing errors.

Anything raised as :class:`IrnnError` is a problem with the user's input (a config value, a data
file, a run directory) rather than a bug: the CLI prints its message as one line and exits
non-zero, without a traceback.
"""


class IrnnError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(IrnnError, ValueError):
    """A wrong option or argument value."""


class DataError(IrnnError):
    """A data file that is missing, truncated, corrupt or fails its checksum."""


class RunDirError(IrnnError):
    """A run directory that cannot be used as asked (missing checkpoint, another run's config)."""


class TrainingDiverged(IrnnError):
    """The loss stayed non-finite after the allowed number of rollbacks."""
