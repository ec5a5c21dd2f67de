"""Gaussian noise from a cryptographically secure generator (ChaCha20 keystream).

Every DP noise draw in a hardened run comes from here: client-level noise (central and
distributed, :mod:`dp._client_level`) and the per-step DP-SGD noise of
:class:`~dp.SampleLevelDPClient` (which replaces Opacus's torch-generator noise). numpy's
and torch's generators are not cryptographic: an observer who learns (or guesses) their
state can predict and subtract the noise. numpy generators remain for explicitly seeded
tests only.

Construction: a :class:`SecureGaussian` holds a ChaCha20 cipher (pycryptodome, RFC 7539
core, 64-bit nonce and counter) keyed with 32 bytes from ``secrets.token_bytes``; its
keystream is read as little-endian 64-bit words, each cut to its top 53 bits, giving
uniforms ``k * 2**-53`` on the float64 grid. Gaussians come from the Box-Muller transform
``sqrt(-2 ln u1) * (cos 2 pi u2, sin 2 pi u2)`` with ``u1`` in ``(0, 1]`` (so the log is
finite) and ``u2`` in ``[0, 1)``. The tails are cut at ``sqrt(-2 ln 2**-53) ~ 8.57``
standard deviations, which moves no tested statistic and is far beyond any accounting's
reach. Not addressed: floating-point side channels of the sampled values (Mironov 2012);
the released sums are not snapped to a grid.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
from Crypto.Cipher import ChaCha20

from dp._errors import InvalidDPConfigError

__all__ = ["SecureGaussian", "secure_normal"]

_KEY_BYTES = 32
_NONCE_BYTES = 8
_TWO_TO_MINUS_53 = 2.0**-53


class SecureGaussian:
    """Standard-normal sampler on a ChaCha20 keystream.

    ``key`` (32 bytes) is for reproducible tests only; by default the key is fresh from
    the OS entropy pool and never leaves the object. The key is not part of ``repr``.
    """

    def __init__(self, *, key: bytes | None = None) -> None:
        if key is None:
            key = secrets.token_bytes(_KEY_BYTES)
        if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
            raise InvalidDPConfigError(f"key must be {_KEY_BYTES} bytes")
        self._cipher = ChaCha20.new(key=key, nonce=b"\x00" * _NONCE_BYTES)

    def __repr__(self) -> str:
        return "SecureGaussian(<ChaCha20, key hidden>)"

    def uniform53(self, count: int) -> np.ndarray:
        """``count`` integers uniform on ``[0, 2**53)`` (uint64) from the keystream."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidDPConfigError(f"count must be an int >= 0, got {count!r}")
        stream = self._cipher.encrypt(bytes(8 * count))
        words = np.frombuffer(stream, dtype="<u8")
        top: np.ndarray = words >> np.uint64(11)
        return top

    def standard_normal(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Independent N(0, 1) float64 values of ``shape`` (Box-Muller, both outputs used)."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims):
            raise InvalidDPConfigError(f"shape must hold ints >= 0, got {shape!r}")
        count = math.prod(dims)
        pairs = (count + 1) // 2
        bits = self.uniform53(2 * pairs).astype(np.float64)
        u1 = (bits[:pairs] + 1.0) * _TWO_TO_MINUS_53  # (0, 1]
        u2 = bits[pairs:] * _TWO_TO_MINUS_53  # [0, 1)
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * math.pi * u2
        values = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
        out: np.ndarray = values.reshape(dims)
        return out

    def normal(self, std: float, shape: int | tuple[int, ...]) -> np.ndarray:
        """N(0, std^2) float64 values of ``shape``."""
        if isinstance(std, bool) or not isinstance(std, int | float) or not std >= 0:
            raise InvalidDPConfigError(f"std must be a number >= 0, got {std!r}")
        if not math.isfinite(std):
            raise InvalidDPConfigError(f"std must be finite, got {std!r}")
        out: np.ndarray = float(std) * self.standard_normal(shape)
        return out


def secure_normal(std: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """N(0, std^2) float64 values of ``shape`` from a freshly keyed :class:`SecureGaussian`."""
    return SecureGaussian().normal(std, shape)
