"""keccak256 digests over canonical bytes, the one hash used off and on chain.

:data:`Digest` is the ledger's type (:data:`chain.Digest`), re-exported: a digest the
framework computes is the same type as one the ledger returns, with no conversion between
packages. (``dp`` knows nothing of ``chain``; its event digests are plain ``bytes``, which
:func:`keccak256` turns into a :data:`Digest` where ``secagg`` binds them.)
"""

from __future__ import annotations

from Crypto.Hash import keccak

from chain._types import Digest


def keccak256(data: bytes) -> Digest:
    """Return keccak256(data) (Ethereum's hash, not NIST SHA3-256)."""
    hasher = keccak.new(digest_bits=256)
    hasher.update(data)
    return Digest(hasher.digest())
