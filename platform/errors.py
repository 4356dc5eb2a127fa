"""Errors a user can hit. Each message says what was wrong and what to do about it.

The CLI prints a :class:`TomoloopError` without a traceback and exits non-zero.
"""


class TomoloopError(Exception):
    """Base class for every error caused by input, configuration or an outside system."""

    exit_code = 2


class StackReadError(TomoloopError):
    """A stack file is missing, unreadable, corrupt or not a single-channel z-stack."""


class StackValidationError(TomoloopError):
    """Stacks read fine but do not fit together or do not match the declared phases."""


class PhaseMapError(TomoloopError):
    """A phase map string or a phase reference is malformed or unknown."""


class OutputError(TomoloopError):
    """An output location cannot be used (exists and is not empty, not writable, ...)."""


class RegistryDatabaseError(TomoloopError):
    """The registry database cannot be used as it is: a URL that is not one, a backend or
    driver tomoloop cannot use, a corrupt file, a schema at another revision."""
