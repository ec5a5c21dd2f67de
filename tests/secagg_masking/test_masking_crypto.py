"""The small crypto modules on their own: PRG, X25519/HKDF, AES-GCM share binding, ciphers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from secagg.masking import ShareAuthenticationError
from secagg.masking._aead import channel_keys, open_shares, seal_shares
from secagg.masking._ciphers import aes_ctr_keystream, aes_gcm_open
from secagg.masking._keys import (
    agree,
    generate_keypair,
    hkdf,
    load_public,
    load_secret,
    public_from_secret,
)
from secagg.masking._prg import expand_mask, uniform_floats

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
def _sealed(shared: bytes):
    send, _ = channel_keys(shared, params_digest=DIGEST, round_id=3, first=1, second=2)
    nonce, sealed = seal_shares(
        send, params_digest=DIGEST, round_id=3, sender=1, receiver=2, plaintext=b"s" * 132
    )
    return nonce, sealed


def test_aead_round_trip_between_the_pair() -> None:
    shared = os.urandom(32)
    nonce, sealed = _sealed(shared)
    _, receive = channel_keys(shared, params_digest=DIGEST, round_id=3, first=2, second=1)
    receive_key = channel_keys(shared, params_digest=DIGEST, round_id=3, first=2, second=1)[1]
    assert receive == receive_key
    plaintext = open_shares(
        receive,
        params_digest=DIGEST,
        round_id=3,
        sender=1,
        receiver=2,
        nonce=nonce,
        sealed=sealed,
    )
    assert plaintext == b"s" * 132


def test_directions_use_different_keys() -> None:
    shared = os.urandom(32)
    one_to_two, two_to_one = channel_keys(
        shared, params_digest=DIGEST, round_id=3, first=1, second=2
    )
    assert one_to_two != two_to_one
    assert channel_keys(shared, params_digest=DIGEST, round_id=3, first=2, second=1) == (
        two_to_one,
        one_to_two,
    )


@pytest.mark.parametrize(
    "change",
    ["tamper", "sender", "receiver", "round", "params", "nonce"],
)
def test_aead_tamper_or_rebind_fails(change: str) -> None:
    shared = os.urandom(32)
    nonce, sealed = _sealed(shared)
    receive = channel_keys(shared, params_digest=DIGEST, round_id=3, first=2, second=1)[1]
    kwargs = dict(
        params_digest=DIGEST, round_id=3, sender=1, receiver=2, nonce=nonce, sealed=sealed
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
    with pytest.raises(ShareAuthenticationError, match="failed AES-GCM authentication"):
        open_shares(receive, **kwargs)


def test_gcm_open_refuses_short_input() -> None:
    opened = aes_gcm_open(os.urandom(32), nonce=os.urandom(12), sealed=b"x", associated_data=b"")
    assert opened is None
