"""Mask expansion: a 256-bit secret -> a vector of uniform uint32 words (AES-256-CTR).

The keystream is read straight into a numpy ``uint32`` array; no numpy random generator
and no folding of the secret into a smaller seed is ever involved. Security rests on AES
being a PRF: without the 256-bit key the words are indistinguishable from uniform.
"""

from __future__ import annotations

import numpy as np

from secagg.masking._ciphers import aes_ctr_keystream, aes_ctr_keystream_into
from secagg.masking._constants import SECRET_BYTES


def expand_mask(key: bytes, *, dim: int) -> np.ndarray:
    """Return ``dim`` pseudorandom little-endian uint32 words from the 32-byte ``key``."""
    if len(key) != SECRET_BYTES:
        raise ValueError(f"mask key must be {SECRET_BYTES} bytes, got {len(key)}")
    if dim < 0:
        raise ValueError(f"dim must be >= 0, got {dim}")
    return np.frombuffer(aes_ctr_keystream(key, nbytes=4 * dim), dtype="<u4")


def uniform_floats(key: bytes, *, dim: int) -> np.ndarray:
    """Return ``dim`` floats uniform in [0, 1) (32-bit resolution) from ``key``."""
    floats = expand_mask(key, dim=dim).astype(np.float64)
    floats *= 1.0 / 2**32
    return floats


class MaskAccumulator:
    """Adds (or subtracts) masks of ``dim`` words into uint32 vectors, modulo 2^32.

    Each mask is the same keystream as :func:`expand_mask` of its key, written into one
    scratch buffer that every mask of this accumulator reuses (no allocation per mask), and
    added in place. The buffer holds only the last mask's words, which are not secret
    beyond the vector they were added to; it is freed with the accumulator.
    """

    def __init__(self, dim: int) -> None:
        if dim < 0:
            raise ValueError(f"dim must be >= 0, got {dim}")
        self.dim = dim
        self._buffer = bytearray(4 * dim + 15)  # room for update_into's one block more
        self._words = np.frombuffer(self._buffer, dtype="<u4", count=dim)

    def add(self, vector: np.ndarray, key: bytes, *, negate: bool = False) -> None:
        """``vector += mask(key)`` (``-=`` with ``negate``), modulo 2^32, in place."""
        if len(key) != SECRET_BYTES:
            raise ValueError(f"mask key must be {SECRET_BYTES} bytes, got {len(key)}")
        if vector.dtype != np.uint32 or vector.shape != (self.dim,):
            raise ValueError(f"vector must be uint32 of shape ({self.dim},)")
        aes_ctr_keystream_into(key, self._buffer, nbytes=4 * self.dim)
        if negate:
            np.subtract(vector, self._words, out=vector)
        else:
            np.add(vector, self._words, out=vector)
