"""The blob parser: canonical packing and hypothesis fuzzing (no SEAL call per example)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg._digest import Digest
from secagg._errors import BlobFormatError, ParameterMismatchError
from secagg.ckks import (
    CKKSClient,
    KeyHolder,
    RevealPolicy,
    aggregation_params,
    parse_blob,
    parse_header,
    wire_prime,
)
from secagg.ckks._blob import pack_coefficients, unpack_coefficients

_FUZZ = settings(max_examples=200, deadline=None)
_NAMED = (BlobFormatError, ParameterMismatchError)


@given(bits=st.integers(min_value=20, max_value=60), seed=st.integers(0, 2**32 - 1))
@_FUZZ
def test_packing_round_trips_and_matches_the_bit_layout(bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = 8 * int(rng.integers(1, 9))
    values = rng.integers(0, 2**bits, size=count, dtype=np.uint64)
    packed = pack_coefficients(values, bits)
    assert len(packed) == count * bits // 8
    reference = sum(int(value) << (index * bits) for index, value in enumerate(values))
    assert int.from_bytes(packed, "little") == reference
    np.testing.assert_array_equal(unpack_coefficients(packed, count, bits), values)


@functools.cache
def _valid_blob() -> tuple[bytes, Digest]:
    """One real client blob (3000 values, two ciphertexts) and its context digest."""
    holder = KeyHolder(params=aggregation_params(), policy=RevealPolicy())
    update = np.random.default_rng(5).uniform(-1.0, 1.0, size=3000)
    return CKKSClient(holder.public_context_bytes()).protect(update), holder.context_digest


def _parse(blob: bytes, digest: Digest) -> None:
    parse_blob(blob, aggregation_params(), context_digest=digest)


@given(data=st.binary(max_size=400))
@_FUZZ
def test_random_bytes_raise_named_errors(data: bytes) -> None:
    with pytest.raises(_NAMED):
        _parse(data, Digest(b"\x00" * 32))


@given(cut=st.integers(min_value=0, max_value=55_350))
@_FUZZ
def test_every_truncation_is_refused(cut: int) -> None:
    blob, digest = _valid_blob()
    with pytest.raises(BlobFormatError):
        _parse(blob[:cut], digest)


@given(position=st.integers(min_value=0, max_value=54), value=st.integers(0, 255))
@_FUZZ
def test_header_mutations_are_refused_or_harmless(position: int, value: int) -> None:
    blob, digest = _valid_blob()
    mutated = blob[:position] + bytes([value]) + blob[position + 1 :]
    try:
        parsed = parse_blob(mutated, aggregation_params(), context_digest=digest)
    except _NAMED:
        return
    # Only a change of the element count that keeps the chunk count can stay well formed;
    # the aggregator then refuses it as a length mismatch.
    original, _ = parse_header(blob)
    assert mutated == blob or parsed.header.element_count != original.element_count
    assert parsed.header.chunk_count == original.chunk_count


@given(position=st.integers(min_value=55, max_value=55_350), flip=st.integers(1, 255))
@_FUZZ
def test_payload_mutations_parse_or_raise_named_errors(position: int, flip: int) -> None:
    blob, digest = _valid_blob()
    position = min(position, len(blob) - 1)
    mutated = blob[:position] + bytes([blob[position] ^ flip]) + blob[position + 1 :]
    try:
        parsed = parse_blob(mutated, aggregation_params(), context_digest=digest)
    except BlobFormatError:
        return
    assert np.all(parsed.coefficients < np.uint64(wire_prime(aggregation_params())))


@given(extra=st.binary(min_size=1, max_size=64))
@_FUZZ
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    blob, digest = _valid_blob()
    with pytest.raises(BlobFormatError):
        _parse(blob + extra, digest)


def test_coefficient_not_reduced_is_refused() -> None:
    blob, digest = _valid_blob()
    header, offset = parse_header(blob)
    params = aggregation_params()
    count = header.chunk_count * 2 * params.poly_modulus_degree
    values = unpack_coefficients(memoryview(blob)[offset:], count, 54)
    values[5] = np.uint64(wire_prime(params))  # == q: in range of 54 bits, not reduced
    forged = blob[:offset] + pack_coefficients(values, 54)
    with pytest.raises(BlobFormatError, match=">= q"):
        _parse(forged, digest)


def test_coefficient_count_must_fill_whole_groups() -> None:
    with pytest.raises(BlobFormatError, match="multiple of 8"):
        unpack_coefficients(bytes(64), 3, 54)
