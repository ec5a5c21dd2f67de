"""Mask expansion: a 256-bit secret -> a vector of uniform uint32 words (AES-256-CTR).

The keystream is read straight into a numpy ``uint32`` array; no numpy random generator
and no folding of the secret into a smaller seed is ever involved. Security rests on AES
being a PRF: without the 256-bit key the words are indistinguishable from uniform.
"""

from __future__ import annotations

import numpy as np

from secagg.masking._ciphers import aes_ctr_keystream
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
    return expand_mask(key, dim=dim).astype(np.float64) * (1.0 / 2**32)
