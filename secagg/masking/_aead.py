"""Share encryption: AES-256-GCM bound to sender, receiver, round and round parameters.

The keys are HKDF(X25519(c_u, c_v), salt=params_digest, info=label|round|low|high), split
into one key per direction, so the two directions of a pair use different keys, and the
associated data repeats the binding: a ciphertext moved to another receiver, attributed
to another sender, replayed in another round or under other parameters fails
authentication.
"""

from __future__ import annotations

import struct

from Crypto.Random import get_random_bytes

from secagg.masking._ciphers import aes_gcm_open, aes_gcm_seal
from secagg.masking._constants import LABEL_SHARE_AD, LABEL_SHARE_KEY, NONCE_BYTES
from secagg.masking._errors import ShareAuthenticationError
from secagg.masking._keys import hkdf


def _binding(round_id: int, sender: int, receiver: int) -> bytes:
    return struct.pack("<QQQ", round_id, sender, receiver)


def channel_keys(
    shared: bytes, *, params_digest: bytes, round_id: int, first: int, second: int
) -> tuple[bytes, bytes]:
    """Directional AES keys of one pair: (``first`` -> ``second``, ``second`` -> ``first``).

    One HKDF-SHA256 call expands the X25519 secret into both 256-bit keys; the info string
    names the round and both ids, so each direction of each pair of each round differs.
    """
    low, high = sorted((first, second))
    keys = hkdf(
        shared,
        salt=params_digest,
        info=LABEL_SHARE_KEY + _binding(round_id, low, high),
        length=64,
    )
    low_to_high, high_to_low = keys[:32], keys[32:]
    if first == low:
        return low_to_high, high_to_low
    return high_to_low, low_to_high


def seal_shares(
    key: bytes,
    *,
    params_digest: bytes,
    round_id: int,
    sender: int,
    receiver: int,
    plaintext: bytes,
) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext``; returns (nonce, ciphertext||tag)."""
    nonce = get_random_bytes(NONCE_BYTES)
    ad = LABEL_SHARE_AD + params_digest + _binding(round_id, sender, receiver)
    return nonce, aes_gcm_seal(key, nonce=nonce, plaintext=plaintext, associated_data=ad)


def open_shares(
    key: bytes,
    *,
    params_digest: bytes,
    round_id: int,
    sender: int,
    receiver: int,
    nonce: bytes,
    sealed: bytes,
) -> bytes:
    """Decrypt and authenticate; raises :class:`ShareAuthenticationError` on any mismatch."""
    ad = LABEL_SHARE_AD + params_digest + _binding(round_id, sender, receiver)
    plaintext = aes_gcm_open(key, nonce=nonce, sealed=sealed, associated_data=ad)
    if plaintext is None:
        raise ShareAuthenticationError(
            f"shares from client {sender} to client {receiver} in round {round_id} "
            "failed AES-GCM authentication"
        )
    return plaintext
