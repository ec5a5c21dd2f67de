"""Fixed-point encoding of updates in Z_(2^b) by unbiased stochastic rounding.

A coordinate ``x`` is clipped to ``[-clip_range, clip_range]`` and encoded as
``floor(x * scale + u) mod 2^b`` with ``u`` uniform in [0, 1) from AES-CTR under a fresh
key, so ``E[q] = x * scale`` exactly. The sum of ``n`` such values is decoded as a signed
(two's complement) integer; this is exact as long as ``n * (floor(clip_range*scale) + 1)``
stays at most ``2^(b-1) - 1``, which :func:`max_scale` and :func:`check_room` enforce.
"""

from __future__ import annotations

import math

import numpy as np
from Crypto.Random import get_random_bytes

from secagg.masking._constants import SECRET_BYTES
from secagg.masking._errors import WrapAroundError
from secagg.masking._prg import uniform_floats


def sum_limit(bits: int) -> int:
    """Largest magnitude a decoded sum may reach in Z_(2^bits): ``2^(bits-1) - 1``."""
    return 2 ** (bits - 1) - 1


def max_scale(*, bits: int, clip_range: float, num_clients: int) -> float:
    """The largest scale whose sum over ``num_clients`` cannot wrap around 2^bits.

    Raises :class:`WrapAroundError` when not even one quantization step per client fits.
    """
    steps = sum_limit(bits) // num_clients - 1
    scale = steps / clip_range
    if steps < 1:
        raise WrapAroundError(
            f"bits={bits} and clip_range={clip_range} leave no room for the sum of "
            f"n={num_clients} clients: need n * (floor(clip_range * scale) + 1) <= 2^(bits-1) - 1 "
            f"= {sum_limit(bits)} with at least one step per client (clip_range * scale >= 1)"
        )
    return scale


def check_room(*, bits: int, clip_range: float, scale: float, num_clients: int) -> None:
    """Raise :class:`WrapAroundError` unless ``n * (floor(clip*scale) + 1) <= 2^(bits-1)-1``."""
    needed = num_clients * (math.floor(clip_range * scale) + 1)
    if needed > sum_limit(bits):
        raise WrapAroundError(
            f"scale={scale}, clip_range={clip_range}, bits={bits}: the sum of "
            f"n={num_clients} clients can reach {needed}, above the limit "
            f"2^(bits-1) - 1 = {sum_limit(bits)} (lower scale or clip_range, or raise bits)"
        )


def quantize(
    values: np.ndarray, *, bits: int, clip_range: float, scale: float, key: bytes | None = None
) -> np.ndarray:
    """Clip, scale and stochastically round ``values`` into uint32 words mod ``2^bits``.

    ``key`` (32 bytes) fixes the rounding randomness, for tests; by default a fresh key is
    drawn from the OS CSPRNG.
    """
    array = np.asarray(values, dtype=np.float64)
    scaled = np.clip(array, -clip_range, clip_range)
    scaled *= scale
    rounding_key = get_random_bytes(SECRET_BYTES) if key is None else key
    scaled += uniform_floats(rounding_key, dim=array.size)
    np.floor(scaled, out=scaled)
    # int64 -> uint32 keeps the low 32 bits (two's complement): the value mod 2^32.
    words = scaled.astype(np.int64).astype(np.uint32)
    if bits < 32:
        words &= np.uint32(2**bits - 1)
    return words


def dequantize_sum(words: np.ndarray, *, bits: int, scale: float) -> np.ndarray:
    """Decode a sum of quantized vectors mod ``2^bits`` (two's complement) to floats."""
    reduced = np.asarray(words, dtype=np.uint64) & np.uint64(2**bits - 1)
    signed = reduced.astype(np.int64)
    signed[signed > sum_limit(bits)] -= 2**bits
    return signed.astype(np.float64) / scale
