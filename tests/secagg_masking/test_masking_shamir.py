"""Shamir t-of-k sharing over GF(2^521 - 1): exact with t shares, useless with t - 1."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.masking import ShareReconstructionError
from secagg.masking._constants import FIELD_PRIME
from secagg.masking._shamir import (
    batch_evaluator,
    batch_inverse,
    combine,
    decode_share,
    encode_share,
    evaluator,
    interpolate_at,
    interpolate_at_zero,
    split,
    split_many,
)


@settings(max_examples=25, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(1, 8),
    extra=st.integers(0, 5),
    data=st.data(),
)
def test_any_t_shares_reconstruct(secret: bytes, threshold: int, extra: int, data) -> None:
    points = data.draw(
        st.lists(
            st.integers(1, 2**63),
            min_size=threshold + extra,
            max_size=threshold + extra,
            unique=True,
        )
    )
    shares = split(secret, threshold=threshold, points=points)
    subset = data.draw(st.permutations(points))[:threshold]
    assert combine({x: shares[x] for x in subset}, threshold=threshold) == secret


def test_t_minus_one_shares_fail_and_reveal_nothing() -> None:
    secret = os.urandom(32)
    shares = split(secret, threshold=5, points=range(1, 9))
    partial = {x: shares[x] for x in (1, 2, 3, 4)}
    with pytest.raises(ShareReconstructionError, match="need 5 shares"):
        combine(partial, threshold=5)
    # Interpolating t-1 shares gives a degree t-2 polynomial: not the secret.
    assert interpolate_at_zero(partial) != int.from_bytes(secret, "big")


def test_t_minus_one_shares_are_consistent_with_any_secret() -> None:
    """For t-1 fixed shares, every candidate secret has a matching t-th share: perfect hiding."""
    shares = split(os.urandom(32), threshold=3, points=[1, 2, 3])
    known = {1: shares[1], 2: shares[2]}
    for candidate in (0, 1, 2**255):
        polynomial = {0: candidate, **known}
        assert interpolate_at(polynomial, 1) == known[1]
        assert 0 <= interpolate_at(polynomial, 3) < FIELD_PRIME


def test_tampered_share_changes_result() -> None:
    secret = os.urandom(32)
    shares = split(secret, threshold=3, points=[5, 6, 7])
    shares[6] = (shares[6] + 1) % FIELD_PRIME
    with contextlib.suppress(ShareReconstructionError):  # out of range: detected, also fine
        assert combine(shares, threshold=3) != secret


def test_fresh_randomness_per_split() -> None:
    secret = bytes(32)
    assert split(secret, threshold=2, points=[1, 2]) != split(secret, threshold=2, points=[1, 2])


def test_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        split(bytes(32), threshold=4, points=[1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        split(bytes(32), threshold=2, points=[1, 1, 2])
    with pytest.raises(ValueError, match="distinct"):
        split(bytes(32), threshold=1, points=[0])
    with pytest.raises(ValueError, match="32 bytes"):
        split(bytes(31), threshold=1, points=[1])


def test_share_encoding_round_trip_and_range() -> None:
    value = FIELD_PRIME - 1
    assert decode_share(encode_share(value)) == value
    with pytest.raises(ValueError, match="outside"):
        decode_share((FIELD_PRIME).to_bytes(66, "big"))
    with pytest.raises(ValueError, match="66 bytes"):
        decode_share(b"\x00" * 65)


def test_evaluator_matches_interpolation_and_flags_a_bad_share() -> None:
    shares = split(os.urandom(32), threshold=6, points=range(1, 15))
    window = {x: shares[x] for x in list(shares)[:6]}
    evaluate = evaluator(window)
    for x in shares:
        assert evaluate(x) == interpolate_at(window, x) == shares[x]
    assert evaluate(99) == interpolate_at(window, 99)
    forged = (shares[10] + 1) % FIELD_PRIME
    assert evaluate(10) != forged


def test_split_many_shares_each_secret_with_fresh_coefficients() -> None:
    secrets_ = [os.urandom(32), os.urandom(32)]
    points = list(range(1, 12))
    first, second = split_many(secrets_, threshold=6, points=points)
    assert combine(first, threshold=6) == secrets_[0]
    assert combine(second, threshold=6) == secrets_[1]
    assert combine({x: first[x] for x in points[5:]}, threshold=6) == secrets_[0]
    # The same secret twice gets independent polynomials.
    again, twice = split_many([secrets_[0], secrets_[0]], threshold=6, points=points)
    assert again != twice
    with pytest.raises(ValueError, match="32 bytes, got 31"):
        split_many([secrets_[0], os.urandom(31)], threshold=2, points=points)


def test_batch_inverse_inverts_every_value_and_refuses_zero() -> None:
    values = [1, 2, FIELD_PRIME - 1, 2**300 + 7, 12345]
    for value, inverse in zip(values, batch_inverse(values), strict=True):
        assert value * inverse % FIELD_PRIME == 1
    assert batch_inverse([]) == []
    with pytest.raises(ValueError):
        batch_inverse([3, FIELD_PRIME, 5])


def test_batch_evaluator_matches_interpolation_at_many_points() -> None:
    shares = split(os.urandom(32), threshold=4, points=range(1, 10))
    window = {x: shares[x] for x in (2, 4, 6, 8)}
    points = [1, 2, 3, 5, 7, 9, 1000]
    values = batch_evaluator(window)(points)
    assert values == [interpolate_at(window, x) for x in points]
    assert values[:6] == [shares[x] for x in points[:6]]
    assert batch_evaluator(window)([]) == []
