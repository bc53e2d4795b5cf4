"""Domain errors. The CLI turns any `MvdError` into a one-line message and exit code 2."""

from __future__ import annotations


class MvdError(ValueError):
    """Bad input from the user (a file, a field, an option); the message names it."""


class ConfigError(MvdError):
    """A recipe, YAML file or override is wrong."""


class DataError(MvdError):
    """A data set file or folder is missing or malformed."""


class BackendUnavailable(MvdError):
    """The framework behind a backend is not installed or cannot use the device."""


class CheckpointError(MvdError):
    """A checkpoint or weights file is unreadable, incomplete, mis-shaped or of the wrong dtype."""


class RunInUse(MvdError):
    """Another live process holds the run folder's lock."""
