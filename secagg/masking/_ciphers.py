"""The one module that builds pycryptodome ciphers: AES-256-CTR keystreams and AES-256-GCM.

Everything else in the package calls these two small functions, so there is exactly one
place to review how keys, nonces and counters reach the block cipher.
"""

from __future__ import annotations

from functools import lru_cache

from Crypto.Cipher import AES

from secagg.masking._constants import NONCE_BYTES, TAG_BYTES

_KEY_BYTES = 32


def aes_ctr_keystream(key: bytes, *, nbytes: int) -> bytearray:
    """Return ``nbytes`` of the AES-256-CTR keystream under ``key`` (counter from 0).

    Each key must be used for one stream only (callers derive a fresh key per purpose).
    """
    if len(key) != _KEY_BYTES:
        raise ValueError(f"AES-CTR key must be {_KEY_BYTES} bytes, got {len(key)}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    out = bytearray(nbytes)
    cipher = AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=0)
    cipher.encrypt(_zeros(nbytes), output=out)
    return out


@lru_cache(maxsize=4)
def _zeros(nbytes: int) -> bytes:
    """An immutable all-zero plaintext, shared between calls of the same length."""
    return bytes(nbytes)


def aes_gcm_seal(key: bytes, *, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM encrypt; returns ciphertext || 16-byte tag."""
    if len(key) != _KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("AES-GCM needs a 32-byte key and a 12-byte nonce")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(associated_data)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def aes_gcm_open(
    key: bytes, *, nonce: bytes, sealed: bytes, associated_data: bytes
) -> bytes | None:
    """AES-256-GCM decrypt and verify; ``None`` when authentication fails."""
    if len(key) != _KEY_BYTES or len(nonce) != NONCE_BYTES or len(sealed) < TAG_BYTES:
        return None
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(associated_data)
    try:
        return cipher.decrypt_and_verify(sealed[:-TAG_BYTES], sealed[-TAG_BYTES:])
    except ValueError:
        return None
