"""Noise flooding and rounding of a decrypted aggregate (key holder side).

Gaussian noise comes from the operating system's CSPRNG (``os.urandom``), never from
numpy's generators: the flooding noise is what hides the CKKS decryption error from
whoever sees the released values, so it must be unpredictable to them.
"""

from __future__ import annotations

import os

import numpy as np

_FRACTION_BITS = 53


def _uniform_open(count: int) -> np.ndarray:
    """``count`` uniforms in (0, 1] with 53 random bits each, from os.urandom."""
    words = np.frombuffer(os.urandom(8 * count), dtype="<u8")
    return ((words >> np.uint64(64 - _FRACTION_BITS)).astype(np.float64) + 1.0) * 2.0**-53


def csprng_gaussian(count: int, *, std: float) -> np.ndarray:
    """``count`` i.i.d. N(0, std^2) samples by Box-Muller over CSPRNG uniforms."""
    radius = np.sqrt(-2.0 * np.log(_uniform_open(count)))
    angle = 2.0 * np.pi * _uniform_open(count)
    return std * radius * np.cos(angle)


def flood_and_round(values: np.ndarray, *, flood_std: float, grid: float) -> np.ndarray:
    """Add N(0, flood_std^2) noise to every value, then round to multiples of ``grid``."""
    noisy = values + csprng_gaussian(values.shape[0], std=flood_std)
    return np.round(noisy / grid) * grid
