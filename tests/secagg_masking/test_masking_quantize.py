"""Stochastic rounding in Z_(2^b): round trip, unbiasedness, and the wrap-around check."""

from __future__ import annotations

import os

import numpy as np
import pytest

from secagg.masking import WrapAroundError
from secagg.masking._quantize import (
    check_room,
    dequantize_sum,
    max_scale,
    quantize,
    sum_limit,
)


def test_round_trip_within_one_step() -> None:
    values = np.linspace(-1.0, 1.0, 1001)
    scale = max_scale(bits=32, clip_range=1.0, num_clients=10)
    words = quantize(values, bits=32, clip_range=1.0, scale=scale)
    assert words.dtype == np.uint32
    decoded = dequantize_sum(words, bits=32, scale=scale)
    assert np.max(np.abs(decoded - values)) <= 1.0 / scale


def test_stochastic_rounding_is_unbiased() -> None:
    scale = 4.0  # coarse on purpose: 0.3 sits between steps 1 and 2
    values = np.full(200_000, 0.3)
    decoded = dequantize_sum(
        quantize(values, bits=16, clip_range=1.0, scale=scale), bits=16, scale=scale
    )
    assert set(np.unique(decoded)) == {0.25, 0.5}
    # mean of Bernoulli(0.2) steps: std of the mean is 0.25 * 0.4 / sqrt(n) ~ 2.2e-4
    assert abs(decoded.mean() - 0.3) < 1.5e-3


def test_rounding_randomness_is_keyed() -> None:
    values = np.full(100, 0.123456789)
    key = os.urandom(32)
    first = quantize(values, bits=32, clip_range=1.0, scale=100.0, key=key)
    assert np.array_equal(first, quantize(values, bits=32, clip_range=1.0, scale=100.0, key=key))


def test_values_are_clipped_to_the_range() -> None:
    scale = 1000.0
    words = quantize(np.array([5.0, -5.0]), bits=32, clip_range=2.0, scale=scale)
    decoded = dequantize_sum(words, bits=32, scale=scale)
    assert np.all(np.abs(decoded) <= 2.0 + 1.0 / scale)


def test_sum_of_n_clients_at_the_range_does_not_wrap() -> None:
    n, bits, clip = 50, 16, 1.0
    scale = max_scale(bits=bits, clip_range=clip, num_clients=n)
    for sign in (1.0, -1.0):
        total = np.zeros(3, dtype=np.uint32)
        for _ in range(n):
            total += quantize(np.full(3, sign * clip), bits=bits, clip_range=clip, scale=scale)
        decoded = dequantize_sum(total, bits=bits, scale=scale)
        assert np.allclose(decoded, sign * n * clip, atol=n / scale)


def test_wrap_around_error_names_the_limit() -> None:
    with pytest.raises(WrapAroundError, match=r"2\^\(bits-1\) - 1 = 127"):
        max_scale(bits=8, clip_range=1.0, num_clients=100)
    with pytest.raises(WrapAroundError, match="above the limit"):
        check_room(bits=16, clip_range=1.0, scale=1000.0, num_clients=100)
    check_room(bits=16, clip_range=1.0, scale=300.0, num_clients=100)
    assert sum_limit(32) == 2**31 - 1
