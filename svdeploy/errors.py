"""Errors raised by svdeploy. Every message names the offending value and what was expected."""


class SvdeployError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class ConfigError(SvdeployError, ValueError):
    """A configuration file or value is invalid."""


class CheckpointError(SvdeployError):
    """A checkpoint is unreadable, of an unknown layout, or does not fit the network."""


class ManifestError(SvdeployError):
    """An artifact directory is missing, incomplete, tampered with, or of an unknown version."""


class ExportError(SvdeployError):
    """An export failed (including parity validation above tolerance)."""


class InputError(SvdeployError, ValueError):
    """A user input (image, noise file, sampling parameter) is invalid."""


class BackendError(SvdeployError):
    """A runtime backend is unavailable or cannot run the artifact."""


class OutputError(SvdeployError):
    """An output cannot be written (exists, protected, read-only, disk full, ...)."""


class ServeError(SvdeployError):
    """svd-serve cannot start or keep serving (Ray, the port, the jobs directory, the replicas)."""


class MemoryLimitError(SvdeployError):
    """A run's memory plan exceeds the limit it was given (svd-run --max-memory)."""
