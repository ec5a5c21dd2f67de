"""keccak256 digests over canonical bytes, the one hash used off and on chain."""

from __future__ import annotations

from typing import NewType

from Crypto.Hash import keccak

Digest = NewType("Digest", bytes)
"""A 32-byte keccak256 digest."""


def keccak256(data: bytes) -> Digest:
    """Return keccak256(data) (Ethereum's hash, not NIST SHA3-256)."""
    hasher = keccak.new(digest_bits=256)
    hasher.update(data)
    return Digest(hasher.digest())
