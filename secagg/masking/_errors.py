"""Named errors of the masking protocol, each a subclass of the ``secagg`` hierarchy.

Bad input (a malformed, out-of-stage or unauthenticated message) subclasses ``ValueError``
through :class:`~secagg._errors.SecAggError` cases, so callers may catch the precise case,
the ``secagg`` root, or the built-in.
"""

from __future__ import annotations

from secagg._errors import (
    BlobFormatError,
    InsecureParametersError,
    InsufficientClientsError,
    InvalidUpdateError,
    ProtocolAbortError,
    SecAggError,
)


class MaskingParameterError(SecAggError, ValueError):
    """A masking parameter is out of its allowed range (the message names the field)."""


class WrapAroundError(MaskingParameterError):
    """``bits``, ``clip_range`` and ``scale`` leave no room for the sum of ``n`` clients."""


class WeakGraphError(InsecureParametersError):
    """The neighbour graph or threshold cannot meet the security or dropout target."""


class MessageFormatError(BlobFormatError):
    """A protocol message is truncated, has the wrong magic/version/kind or a bad layout."""


class StageError(SecAggError, ValueError):
    """A message (or call) arrived in a stage where it is not expected."""


class UnknownClientError(SecAggError, ValueError):
    """A message names a client that is not part of this round (or not a neighbour)."""


class ShareAuthenticationError(SecAggError, ValueError):
    """An encrypted share failed AES-GCM authentication (tampered or rebound)."""


class MaskedInputError(InvalidUpdateError):
    """A masked vector has the wrong length or element type."""


class ShareReconstructionError(SecAggError, ValueError):
    """Shamir reconstruction failed: too few shares, or inconsistent shares."""


class BelowThresholdError(InsufficientClientsError, ProtocolAbortError):
    """Fewer than ``t`` clients (or shares) survived a stage: the round aborts."""


class SecretExposureError(ProtocolAbortError):
    """A request would reveal both secrets of one client; refused."""


class KeyAuthenticationError(SecAggError, ValueError):
    """A key advertisement is not signed by the ledger account registered for its client.

    Raised by the server on a client's bad advertisement, and by a client when the server
    hands it a neighbour's keys that its registered account did not sign (the server tried
    to substitute keys): that client then sends nothing further.
    """


class FalseAccusationError(SecAggError, ValueError):
    """A client reported a neighbour's shares as unopenable, and the rebuttal shows they open."""


class RebuttalError(SecAggError, ValueError):
    """A rebuttal request is not backed by the reporter's signature on the accused's item."""


class ConsistencyCheckError(ProtocolAbortError):
    """The server's survivor sets are inconsistent or too few clients vouch for one.

    A client that raises it reveals no unmasking share (Bonawitz et al. 2017, ConsistencyCheck).
    """
