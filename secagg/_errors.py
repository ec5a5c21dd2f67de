"""Exception hierarchy of the ``secagg`` package.

One root, :class:`SecAggError`, and named cases that are also built-in exceptions
(``ValueError`` for bad input), so callers can catch either the precise case or the
generic built-in one.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Root of every error raised by ``secagg``."""


class BlobFormatError(SecAggError, ValueError):
    """A protected blob is malformed: truncated, wrong magic, version or layout."""


class ParameterMismatchError(SecAggError, ValueError):
    """A blob or message was made under other parameters (or another key) than expected."""


class InvalidUpdateError(SecAggError, ValueError):
    """A model update cannot be protected: wrong length or dtype, NaN or Inf, out of range."""


class DuplicateClientError(SecAggError, ValueError):
    """The same client (or the same blob) appears twice in one aggregation."""


class EmptyAggregateError(SecAggError, ValueError):
    """An aggregation was asked for over an empty set of inputs."""


class InsufficientClientsError(SecAggError):
    """Fewer clients than the configured minimum or threshold took part."""


class InsecureParametersError(SecAggError, ValueError):
    """Cryptographic parameters below the required security level."""


class CommitmentMismatchError(SecAggError):
    """Bytes do not match the digest that was committed for them."""


class ProtocolAbortError(SecAggError):
    """An interactive protocol cannot finish (for example too many dropouts)."""


class PartyKeyError(SecAggError, ValueError):
    """Party keys cannot be derived: the seed file is missing, unreadable or too short."""


class UnknownSchemeError(ParameterMismatchError):
    """A scheme name (in a config or a round manifest) that no registered scheme has."""
