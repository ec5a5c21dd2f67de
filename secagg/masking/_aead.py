"""Share encryption: ephemeral-static X25519, HKDF-SHA256, AES-256-GCM.

For each neighbour, the sender draws a fresh ephemeral X25519 key pair ``e`` and seals its
shares under ``HKDF(X25519(e, c_receiver), salt=params_digest,
info=label|round|sender|receiver|e_public)``; the associated data repeats the binding, so
a ciphertext moved to another receiver, attributed to another sender, replayed in another
round or under other parameters fails authentication.

Why ephemeral: a receiver that reports a neighbour's item as unopenable can be checked.
The accused reveals the ephemeral secret of that one item; anyone then recomputes the key
from it and the receiver's (signed) public key and tries the item. Revealing ``e`` opens
that single item and nothing else (the static keys stay secret), and the item holds only
shares the reporter already received, so a rebuttal leaks nothing new to a colluding
reporter. With a static-static channel the report could not be checked without a
private key that opens every channel of the party.
"""

from __future__ import annotations

import struct

from Crypto.Random import get_random_bytes

from secagg.masking import _keys
from secagg.masking._ciphers import aes_gcm_open, aes_gcm_seal
from secagg.masking._constants import LABEL_SHARE_AD, LABEL_SHARE_KEY, NONCE_BYTES
from secagg.masking._errors import ShareAuthenticationError


def _binding(round_id: int, sender: int, receiver: int) -> bytes:
    return struct.pack("<QQQ", round_id, sender, receiver)


def item_key(
    shared: bytes,
    *,
    params_digest: bytes,
    round_id: int,
    sender: int,
    receiver: int,
    ephemeral_public: bytes,
) -> bytes:
    """AES-256 key of one item from ``X25519(e, c_receiver)``, bound to both ids and ``e``."""
    info = LABEL_SHARE_KEY + _binding(round_id, sender, receiver) + ephemeral_public
    return _keys.hkdf(shared, salt=params_digest, info=info)


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


def open_item(
    shared: bytes,
    *,
    params_digest: bytes,
    round_id: int,
    sender: int,
    receiver: int,
    ephemeral_public: bytes,
    nonce: bytes,
    sealed: bytes,
) -> bytes:
    """Derive the item key from the X25519 secret and open the item (either side may call)."""
    key = item_key(
        shared,
        params_digest=params_digest,
        round_id=round_id,
        sender=sender,
        receiver=receiver,
        ephemeral_public=ephemeral_public,
    )
    return open_shares(
        key,
        params_digest=params_digest,
        round_id=round_id,
        sender=sender,
        receiver=receiver,
        nonce=nonce,
        sealed=sealed,
    )
