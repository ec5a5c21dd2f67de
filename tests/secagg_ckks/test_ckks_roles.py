"""Key holder, client and aggregator against real SEAL ciphertexts."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal

from secagg._errors import (
    BlobFormatError,
    DuplicateClientError,
    EmptyAggregateError,
    InsufficientClientsError,
    InvalidUpdateError,
    ParameterMismatchError,
)
from secagg.ckks import (
    CKKSAggregator,
    CKKSClient,
    CKKSParams,
    KeyHolder,
    NotAnAggregateError,
    PublicContext,
    RevealPolicy,
    aggregation_params,
    blob_digest,
    combine_blobs,
    compat_params,
    parse_blob,
    parse_header,
)
from secagg.ckks._seal import SecretSealKeys


def test_sum_is_exact_to_declared_precision(
    key_holder: KeyHolder, public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    updates, blobs = small_blobs
    revealed = key_holder.reveal(combine_blobs(public_context, blobs))
    assert revealed.shape == (3000,)
    assert np.max(np.abs(revealed - updates.sum(axis=0))) < 1e-6
    grid = key_holder.policy.grid
    np.testing.assert_array_equal(np.round(revealed / grid) * grid, revealed)


def test_hundred_client_sum_error_below_1e6(key_holder: KeyHolder, client: CKKSClient) -> None:
    rng = np.random.default_rng(3)
    dim = 2 * aggregation_params().poly_modulus_degree
    aggregator = CKKSAggregator(key_holder.public_context_bytes(), element_count=dim)
    total = np.zeros(dim)
    for _ in range(100):
        update = rng.uniform(-1.0, 1.0, size=dim)
        total += update
        aggregator.add(client.protect(update))
    revealed = key_holder.reveal(aggregator.aggregate())
    assert np.max(np.abs(revealed - total)) <= 1e-6


def test_compat_preset_round_trip() -> None:
    holder = KeyHolder(params=compat_params(), policy=RevealPolicy(min_clients=2))
    encryptor = CKKSClient(holder.public_context_bytes())
    updates = np.random.default_rng(1).uniform(-1, 1, size=(2, 9000))
    aggregate = combine_blobs(holder.public_context, [encryptor.protect(u) for u in updates])
    assert np.max(np.abs(holder.reveal(aggregate) - updates.sum(axis=0))) < 1e-6


def test_blob_is_self_describing_and_full(
    key_holder: KeyHolder, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    blob = small_blobs[1][0]
    header, _ = parse_header(blob)
    assert header.element_count == 3000
    assert header.chunk_count == 2  # 2048 reals per ciphertext: two reals per complex slot
    assert header.context_digest == key_holder.context_digest
    params = aggregation_params()
    # 2 ciphertexts x 2 polynomials x N coefficients x 54 bits, plus a 55-byte header
    assert len(blob) - 55 == 2 * 2 * params.poly_modulus_degree * 54 // 8


def test_aggregate_is_deterministic_and_lists_inputs(
    public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    blobs = small_blobs[1]
    first = combine_blobs(public_context, blobs)
    assert combine_blobs(public_context, blobs) == first
    assert blob_digest(combine_blobs(public_context, list(blobs))) == blob_digest(first)
    header, _ = parse_header(first)
    assert header.is_aggregate
    assert header.inputs == tuple(blob_digest(blob) for blob in blobs)
    reordered = combine_blobs(public_context, blobs[::-1])
    assert parse_header(reordered)[0].inputs == header.inputs[::-1]


def test_aggregator_context_cannot_decrypt(
    key_holder: KeyHolder, public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    updates, blobs = small_blobs
    context = PublicContext.from_bytes(public_context)
    # What travels is exactly parameters + the SEAL public key: nothing else.
    assert context.to_bytes() == public_context
    assert context.public_key == key_holder.public_context.public_key
    # SEAL refuses the only key material in it as a secret key.
    ring = seal.SEALContext(_seal_params(context.params), True, seal.SEC_LEVEL_TYPE.TC128)
    pk = seal.PublicKey()
    secret = seal.SecretKey()
    with _as_file(context.public_key) as path:
        pk.load(ring, path)  # it *is* a valid public key ...
        with pytest.raises((RuntimeError, ValueError)):
            secret.load(ring, path)  # ... and not a secret key
    # The best an aggregator can do, a key of its own under the public parameters, fails.
    aggregate = combine_blobs(public_context, blobs)
    parsed = parse_blob(aggregate, context.params, context_digest=context.digest)
    own_key = SecretSealKeys(context.params)
    wrong = own_key.decrypt(parsed.coefficients)[:3000]
    assert np.median(np.abs(wrong - updates.sum(axis=0))) > 1e3
    assert not hasattr(CKKSAggregator, "reveal")


def test_key_holder_refuses_client_blob_and_small_aggregates(
    key_holder: KeyHolder, public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    blobs = small_blobs[1]
    with pytest.raises(NotAnAggregateError):
        key_holder.reveal(blobs[0])
    with pytest.raises(InsufficientClientsError, match="min_clients=2"):
        key_holder.reveal(combine_blobs(public_context, blobs[:1]))
    strict = KeyHolder(params=aggregation_params(), policy=RevealPolicy(min_clients=4))
    encryptor = CKKSClient(strict.public_context_bytes())
    three = [encryptor.protect(u) for u in small_blobs[0]]
    with pytest.raises(InsufficientClientsError):
        strict.reveal(combine_blobs(strict.public_context, three))


def test_other_key_and_other_parameters_are_refused(
    public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    update = small_blobs[0][0]
    other_key = KeyHolder(params=aggregation_params(), policy=RevealPolicy())
    other_params = KeyHolder(
        params=CKKSParams(poly_modulus_degree=2048, coeff_mod_bit_sizes=(50,), scale_bits=38),
        policy=RevealPolicy(),
    )
    aggregator = CKKSAggregator(public_context, element_count=3000)
    for holder in (other_key, other_params):
        foreign = CKKSClient(holder.public_context_bytes()).protect(update)
        with pytest.raises(ParameterMismatchError, match="another public context"):
            aggregator.add(foreign)
    assert aggregator.count == 0
    aggregate = combine_blobs(public_context, small_blobs[1])
    with pytest.raises(ParameterMismatchError):
        other_key.reveal(aggregate)


@pytest.mark.parametrize(
    "update",
    [
        np.array([0.1, np.nan, 0.2]),
        np.array([0.1, np.inf, 0.2]),
        np.array([], dtype=np.float64),
        np.zeros((2, 3)),
        np.array([1, 2, 3]),
        np.array([2000.0, 0.0]),
    ],
)
def test_client_refuses_bad_updates(client: CKKSClient, update: np.ndarray) -> None:
    with pytest.raises(InvalidUpdateError):
        client.protect(update)


def test_rejected_blob_leaves_state_unchanged(
    public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]], client: CKKSClient
) -> None:
    blobs = small_blobs[1]
    aggregator = CKKSAggregator(public_context, element_count=3000)
    aggregator.add(blobs[0], client_id=1)
    before = aggregator.aggregate()
    bad_inputs = [
        (blobs[1][:-1], BlobFormatError),  # truncated
        (b"XXXX" + blobs[1][4:], BlobFormatError),  # wrong magic
        (blobs[1][:4] + b"\x00\x02" + blobs[1][6:], BlobFormatError),  # wrong version
        (client.protect(np.zeros(10)), ParameterMismatchError),  # wrong length
        (blobs[0], DuplicateClientError),  # the same blob again
        (before, BlobFormatError),  # an aggregate is not a client blob
    ]
    for bad, error in bad_inputs:
        with pytest.raises(error):
            aggregator.add(bad, client_id=2)
        assert aggregator.aggregate() == before
    with pytest.raises(DuplicateClientError):
        aggregator.add(blobs[1], client_id=1)  # the same client twice
    assert aggregator.aggregate() == before
    aggregator.add(blobs[1], client_id=2)
    assert aggregator.count == 2


def test_empty_sets_are_named_errors(public_context: bytes) -> None:
    with pytest.raises(EmptyAggregateError):
        combine_blobs(public_context, [])
    with pytest.raises(EmptyAggregateError):
        CKKSAggregator(public_context, element_count=5).aggregate()


def test_key_holder_refuses_aggregate_listing_a_blob_twice(
    key_holder: KeyHolder, public_context: bytes, small_blobs: tuple[np.ndarray, list[bytes]]
) -> None:
    aggregate = combine_blobs(public_context, small_blobs[1][:2])
    header, _ = parse_header(aggregate)
    first, second = header.inputs
    start = aggregate.index(second)
    forged = aggregate[:start] + first + aggregate[start + 32 :]
    with pytest.raises(DuplicateClientError):
        key_holder.reveal(forged)


def test_flooding_noise_has_declared_std(public_context: bytes, client: CKKSClient) -> None:
    holder_policy = RevealPolicy(min_clients=2, precision_bits=30, flood_std_bits=12)
    holder = KeyHolder(params=aggregation_params(), policy=holder_policy)
    encryptor = CKKSClient(holder.public_context_bytes())
    zeros = np.zeros(8192)
    revealed = holder.reveal(
        combine_blobs(holder.public_context, [encryptor.protect(zeros) for _ in range(2)])
    )
    std = float(np.std(revealed))
    assert 0.9 * 2.0**-12 < std < 1.1 * 2.0**-12
    assert abs(float(np.mean(revealed))) < 5 * 2.0**-12 / np.sqrt(8192)
    again = holder.reveal(
        combine_blobs(holder.public_context, [encryptor.protect(zeros) for _ in range(2)])
    )
    assert not np.array_equal(revealed, again)


def _seal_params(params: CKKSParams) -> seal.EncryptionParameters:
    encryption = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    encryption.set_poly_modulus_degree(params.poly_modulus_degree)
    encryption.set_coeff_modulus(
        seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    )
    return encryption


class _as_file:
    def __init__(self, data: bytes) -> None:
        import tempfile

        self._folder = tempfile.TemporaryDirectory()
        self.path = f"{self._folder.name}/obj.bin"
        with open(self.path, "wb") as handle:
            handle.write(data)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self._folder.cleanup()
