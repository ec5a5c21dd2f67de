"""Exception hierarchy of the ``experiments`` package.

One root, :class:`ExperimentError`; the named cases that stem from bad input also
subclass ``ValueError`` (or ``FileNotFoundError``) so callers may catch the built-in.
"""

from __future__ import annotations


class ExperimentError(Exception):
    """Root of every error raised by ``experiments``."""


class ConfigError(ExperimentError, ValueError):
    """A configuration value is invalid; the message names the field (``federation.rounds``)."""


class DatasetNotFoundError(ExperimentError, FileNotFoundError):
    """A data file is missing; the message names the path and how to obtain the data."""


class ChecksumError(ExperimentError, ValueError):
    """A data file does not match its pinned sha256 checksum."""


class PartitionError(ExperimentError, ValueError):
    """Samples cannot be split across clients as configured (too few samples per client)."""


class CheckpointError(ExperimentError, ValueError):
    """A checkpoint cannot be read (missing, truncated, corrupt, another format) or does
    not belong to the run that tries to resume from it; the message says which."""
