"""Errors a user can act on.

Every error raised on purpose by tuneforge is a :class:`TuneforgeError`; the CLI
prints its message as one line and exits with its ``exit_code``. Anything else
is a bug or an environment failure and exits 1 (with a traceback under --debug).
"""

from __future__ import annotations


class TuneforgeError(Exception):
    """Base class: a one-line, actionable message and an exit code."""

    exit_code = 1


class ConfigError(TuneforgeError):
    """The config file, an override, or an input named by it is wrong (exit 2)."""

    exit_code = 2


class DataError(ConfigError):
    """A dataset is missing, empty, or unusable for the configured objective (exit 2)."""


class ModelError(ConfigError):
    """A model cannot be loaded as configured (exit 2)."""


class StageFailed(TuneforgeError):
    """A stage ran but failed at run time (exit 1)."""

    exit_code = 1


class TrainingStopped(TuneforgeError):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint: nothing failed (exit 0)."""

    exit_code = 0


class GateFailed(TuneforgeError):
    """A quality gate was not met (exit 3)."""

    exit_code = 3
