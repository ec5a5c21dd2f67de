"""Noise flooding and rounding of a decrypted aggregate (key holder side).

The flooding noise hides the CKKS decryption error from whoever sees the released values
(Li and Micciancio 2021), so it must be unpredictable to them; and it must not be fresh
per request, or averaging many releases of the same aggregate would strip it. It is
therefore a deterministic function of the aggregate under a secret key: a PRF
(HMAC-SHA256 keyed by the key holder's secret, over the aggregate's digest) seeds an
extendable-output function (SHAKE-256) that supplies the uniforms of a Box-Muller
Gaussian. Without the key the stream is indistinguishable from random; with the same
aggregate it repeats exactly, so a repeated request returns identical bytes. Never numpy's
generators.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

_FRACTION_BITS = 53
PRF_KEY_BYTES = 32
_DOMAIN = b"secagg-fl/ckks-flooding/v1"


def flooding_seed(prf_key: bytes, aggregate_digest: bytes) -> bytes:
    """PRF(key, digest) = HMAC-SHA256(key, domain || digest): the stream's 32-byte seed."""
    if len(prf_key) < PRF_KEY_BYTES:
        raise ValueError(f"the flooding PRF key needs >= {PRF_KEY_BYTES} bytes")
    return hmac.new(prf_key, _DOMAIN + bytes(aggregate_digest), hashlib.sha256).digest()


def _uniform_open(stream: bytes) -> np.ndarray:
    """Uniforms in (0, 1] with 53 random bits each, from 8-byte words of ``stream``."""
    words = np.frombuffer(stream, dtype="<u8")
    return ((words >> np.uint64(64 - _FRACTION_BITS)).astype(np.float64) + 1.0) * 2.0**-53


def prf_gaussian(count: int, *, std: float, seed: bytes) -> np.ndarray:
    """``count`` N(0, std^2) samples by Box-Muller over SHAKE-256(seed) uniforms."""
    stream = hashlib.shake_256(seed).digest(16 * count)
    radius = np.sqrt(-2.0 * np.log(_uniform_open(stream[: 8 * count])))
    angle = 2.0 * np.pi * _uniform_open(stream[8 * count :])
    return std * radius * np.cos(angle)


def flood_and_round(
    values: np.ndarray, *, flood_std: float, grid: float, seed: bytes
) -> np.ndarray:
    """Add N(0, flood_std^2) noise drawn from ``seed`` to every value, then round to
    multiples of ``grid``."""
    noisy = values + prf_gaussian(values.shape[0], std=flood_std, seed=seed)
    return np.round(noisy / grid) * grid
