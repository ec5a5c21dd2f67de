"""The one module that builds block ciphers: AES-256-CTR keystreams and AES-256-GCM.

Everything else in the package calls these small functions, so there is exactly one place
to review how keys, nonces and counters reach the block cipher. Both go through OpenSSL
(``cryptography``), which uses AES-NI where the CPU has it.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.masking._constants import NONCE_BYTES, TAG_BYTES

_KEY_BYTES = 32
_BLOCK_BYTES = 16
_ZERO_COUNTER = bytes(_BLOCK_BYTES)


def aes_ctr_keystream(key: bytes, *, nbytes: int) -> memoryview:
    """Return ``nbytes`` of the AES-256-CTR keystream under ``key`` (counter block from 0).

    Each key must be used for one stream only (callers derive a fresh key per purpose).
    The result is a writable view of a fresh buffer (numpy can wrap it without a copy).
    """
    if len(key) != _KEY_BYTES:
        raise ValueError(f"AES-CTR key must be {_KEY_BYTES} bytes, got {len(key)}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    # update_into needs room for one block more than the input.
    out = bytearray(nbytes + _BLOCK_BYTES - 1)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER)).encryptor()
    written = encryptor.update_into(_zeros(nbytes), out)
    return memoryview(out)[:written]


def aes_ctr_keystream_into(key: bytes, buffer: bytearray, *, nbytes: int) -> memoryview:
    """Write ``nbytes`` of the AES-256-CTR keystream under ``key`` into ``buffer``.

    The same stream as :func:`aes_ctr_keystream`, without a fresh allocation: callers that
    expand many masks of one length reuse one buffer of at least ``nbytes + 15`` bytes.
    Returns the view of the ``nbytes`` written.
    """
    if len(key) != _KEY_BYTES:
        raise ValueError(f"AES-CTR key must be {_KEY_BYTES} bytes, got {len(key)}")
    if not 0 <= nbytes <= len(buffer) - (_BLOCK_BYTES - 1):
        raise ValueError(
            f"need 0 <= nbytes <= len(buffer) - {_BLOCK_BYTES - 1}, got {nbytes} "
            f"for a buffer of {len(buffer)} bytes"
        )
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER)).encryptor()
    written = encryptor.update_into(_zeros(nbytes), buffer)
    return memoryview(buffer)[:written]


@lru_cache(maxsize=4)
def _zeros(nbytes: int) -> bytes:
    """An immutable all-zero plaintext, shared between calls of the same length."""
    return bytes(nbytes)


def aes_gcm_seal(key: bytes, *, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM encrypt; returns ciphertext || 16-byte tag."""
    if len(key) != _KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("AES-GCM needs a 32-byte key and a 12-byte nonce")
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aes_gcm_open(
    key: bytes, *, nonce: bytes, sealed: bytes, associated_data: bytes
) -> bytes | None:
    """AES-256-GCM decrypt and verify; ``None`` when authentication fails."""
    if len(key) != _KEY_BYTES or len(nonce) != NONCE_BYTES or len(sealed) < TAG_BYTES:
        return None
    try:
        return AESGCM(key).decrypt(nonce, sealed, associated_data)
    except InvalidTag:
        return None
