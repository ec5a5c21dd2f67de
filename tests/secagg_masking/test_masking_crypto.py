"""The small crypto modules on their own: PRG, X25519/HKDF, AES-GCM share binding, ciphers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from secagg.masking import ShareAuthenticationError
from secagg.masking._aead import item_key, open_item, seal_shares
from secagg.masking._ciphers import aes_ctr_keystream, aes_ctr_keystream_into, aes_gcm_open
from secagg.masking._keys import (
    agree,
    generate_keypair,
    hkdf,
    load_public,
    load_secret,
    public_from_secret,
)
from secagg.masking._prg import MaskAccumulator, expand_mask, uniform_floats

DIGEST = bytes(range(32))


# -- PRG ---------------------------------------------------------------------------------
def test_prg_is_deterministic_per_key() -> None:
    key = os.urandom(32)
    first = expand_mask(key, dim=1000)
    assert first.dtype == np.dtype("<u4") and first.shape == (1000,)
    assert np.array_equal(first, expand_mask(key, dim=1000))
    # A prefix property: a longer stream extends a shorter one.
    assert np.array_equal(expand_mask(key, dim=10), first[:10])


def test_prg_uses_every_key_bit() -> None:
    key = bytearray(os.urandom(32))
    base = expand_mask(bytes(key), dim=64)
    for byte in (0, 15, 16, 31):  # both AES-256 key halves matter: no folded seed
        flipped = bytearray(key)
        flipped[byte] ^= 0x80
        assert not np.array_equal(base, expand_mask(bytes(flipped), dim=64))


def test_prg_matches_aes_ctr_keystream_and_looks_uniform() -> None:
    key = os.urandom(32)
    words = expand_mask(key, dim=200_000)
    assert words.tobytes() == bytes(aes_ctr_keystream(key, nbytes=800_000))
    # Mean of uniform uint32 is 2^31 with std 2^32/sqrt(12 n) ~ 2.8e6 here.
    assert abs(words.astype(np.float64).mean() - 2**31) < 6 * 2**32 / np.sqrt(12 * words.size)
    floats = uniform_floats(key, dim=1000)
    assert floats.min() >= 0.0 and floats.max() < 1.0


def test_prg_rejects_short_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        expand_mask(os.urandom(16), dim=4)


def test_keystream_into_a_reused_buffer_is_the_same_stream() -> None:
    buffer = bytearray(4000 + 15)
    for _ in range(2):  # the second stream overwrites the first, whole
        key = os.urandom(32)
        view = aes_ctr_keystream_into(key, buffer, nbytes=4000)
        assert bytes(view) == bytes(aes_ctr_keystream(key, nbytes=4000))
    with pytest.raises(ValueError, match="len\\(buffer\\)"):
        aes_ctr_keystream_into(os.urandom(32), bytearray(4000), nbytes=4000)
    with pytest.raises(ValueError, match="32 bytes"):
        aes_ctr_keystream_into(os.urandom(16), buffer, nbytes=16)


def test_mask_accumulator_adds_and_subtracts_expanded_masks_mod_2_32() -> None:
    dim = 1001
    rng = np.random.default_rng(0)
    start = rng.integers(0, 2**32, dim, dtype=np.uint32)
    plus, minus = os.urandom(32), os.urandom(32)
    vector = start.copy()
    masks = MaskAccumulator(dim)
    masks.add(vector, plus)
    masks.add(vector, minus, negate=True)
    expected = (
        start.astype(np.int64) + expand_mask(plus, dim=dim) - expand_mask(minus, dim=dim)
    ) % 2**32
    assert np.array_equal(vector, expected.astype(np.uint32))
    masks.add(vector, minus)
    masks.add(vector, plus, negate=True)
    assert np.array_equal(vector, start)  # masks cancel exactly
    with pytest.raises(ValueError, match="uint32"):
        masks.add(np.zeros(dim, dtype=np.int64), plus)
    with pytest.raises(ValueError, match="32 bytes"):
        masks.add(vector, os.urandom(31))


# -- key agreement -------------------------------------------------------------------------
def test_key_agreement_is_symmetric_and_pair_specific() -> None:
    alice, bob, carol = generate_keypair(), generate_keypair(), generate_keypair()
    ab = agree(load_secret(alice.secret), load_public(bob.public))
    ba = agree(load_secret(bob.secret), load_public(alice.public))
    ac = agree(load_secret(alice.secret), load_public(carol.public))
    assert ab == ba and len(ab) == 32
    assert ab != ac


def test_public_key_recomputed_from_secret() -> None:
    pair = generate_keypair()
    assert public_from_secret(pair.secret) == pair.public
    assert pair.secret.hex() not in repr(pair)


def test_bad_public_key_rejected() -> None:
    with pytest.raises(ValueError):
        load_public(b"\x00" * 31)
    with pytest.raises(ValueError):
        load_public(b"\x00" * 32)  # a small-order point


def test_hkdf_binds_salt_and_info() -> None:
    shared = os.urandom(32)
    key = hkdf(shared, salt=b"a", info=b"x")
    assert len(key) == 32
    assert key == hkdf(shared, salt=b"a", info=b"x")
    assert key != hkdf(shared, salt=b"b", info=b"x")
    assert key != hkdf(shared, salt=b"a", info=b"y")


# -- AEAD ----------------------------------------------------------------------------------
def _sealed(receiver_public: bytes):
    """Client 1 seals for client 2 under a fresh ephemeral key; returns (e, nonce, sealed)."""
    ephemeral = generate_keypair()
    key = item_key(
        agree(ephemeral.private, load_public(receiver_public)),
        params_digest=DIGEST,
        round_id=3,
        sender=1,
        receiver=2,
        ephemeral_public=ephemeral.public,
    )
    nonce, sealed = seal_shares(
        key, params_digest=DIGEST, round_id=3, sender=1, receiver=2, plaintext=b"s" * 132
    )
    return ephemeral, nonce, sealed


def test_aead_round_trip_receiver_and_revealed_ephemeral_agree() -> None:
    receiver = generate_keypair()
    ephemeral, nonce, sealed = _sealed(receiver.public)
    common = dict(
        params_digest=DIGEST,
        round_id=3,
        sender=1,
        receiver=2,
        ephemeral_public=ephemeral.public,
        nonce=nonce,
        sealed=sealed,
    )
    by_receiver = open_item(agree(receiver.private, load_public(ephemeral.public)), **common)
    # A rebuttal: anyone holding the ephemeral secret and the receiver's public key opens it.
    by_rebuttal = open_item(
        agree(load_secret(ephemeral.secret), load_public(receiver.public)), **common
    )
    assert by_receiver == by_rebuttal == b"s" * 132
    other = generate_keypair()
    with pytest.raises(ShareAuthenticationError):
        open_item(agree(other.private, load_public(ephemeral.public)), **common)


def test_item_keys_bind_the_ephemeral_key_and_both_ids() -> None:
    shared = os.urandom(32)
    base = dict(params_digest=DIGEST, round_id=3, sender=1, receiver=2, ephemeral_public=DIGEST)
    key = item_key(shared, **base)
    for change in ({"sender": 2, "receiver": 1}, {"ephemeral_public": bytes(32)}, {"round_id": 4}):
        assert item_key(shared, **{**base, **change}) != key


@pytest.mark.parametrize(
    "change",
    ["tamper", "sender", "receiver", "round", "params", "nonce"],
)
def test_aead_tamper_or_rebind_fails(change: str) -> None:
    receiver = generate_keypair()
    ephemeral, nonce, sealed = _sealed(receiver.public)
    kwargs = dict(
        params_digest=DIGEST,
        round_id=3,
        sender=1,
        receiver=2,
        ephemeral_public=ephemeral.public,
        nonce=nonce,
        sealed=sealed,
    )
    if change == "tamper":
        kwargs["sealed"] = bytes([sealed[0] ^ 1]) + sealed[1:]
    elif change == "sender":
        kwargs["sender"] = 4
    elif change == "receiver":
        kwargs["receiver"] = 4
    elif change == "round":
        kwargs["round_id"] = 4
    elif change == "params":
        kwargs["params_digest"] = bytes(32)
    else:
        kwargs["nonce"] = os.urandom(12)
    shared = agree(receiver.private, load_public(ephemeral.public))
    with pytest.raises(ShareAuthenticationError, match="failed AES-GCM authentication"):
        open_item(shared, **kwargs)


def test_gcm_open_refuses_short_input() -> None:
    opened = aes_gcm_open(os.urandom(32), nonce=os.urandom(12), sealed=b"x", associated_data=b"")
    assert opened is None


def test_openssl_keystream_matches_an_independent_aes_ctr() -> None:
    """Masks are bit-for-bit what pycryptodome's AES-256-CTR (counter block from 0) gives."""
    from Crypto.Cipher import AES

    key = os.urandom(32)
    reference = AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=0).encrypt(bytes(4 * 1001))
    assert expand_mask(key, dim=1001).tobytes() == reference


@pytest.mark.parametrize(
    "point",
    [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
    ],
)
def test_small_order_public_keys_are_refused(point: str) -> None:
    with pytest.raises(ValueError, match="small order"):
        load_public(bytes.fromhex(point))
    assert load_public(generate_keypair().public) is not None
