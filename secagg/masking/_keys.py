"""X25519 key agreement and HKDF-SHA256, both OpenSSL through ``cryptography``.

Each client holds two X25519 key pairs per round: ``c`` to receive shares and ``s`` to
derive pairwise masks (Bonawitz et al. keep them apart so that reconstructing a dropped
client's ``s`` key never opens the share channels); senders seal each share item under a
fresh ephemeral key pair (see :mod:`._aead`).

Key agreement is the protocol's hot spot (each client does about three per neighbour), so
it uses OpenSSL's constant-time X25519 via ``cryptography``, about ten times faster than
pycryptodome's Python-driven point arithmetic (HKDF likewise, about fourteen times).
Public keys of small order (points whose shared secret is predictable) are refused on
load, and OpenSSL also refuses an all-zero shared secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.masking._constants import PUBLIC_KEY_BYTES, SECRET_BYTES

_SMALL_ORDER = frozenset(
    bytes.fromhex(point)
    for point in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)
"""Encodings of the points of order 1, 2, 4 and 8 (libsodium's blocklist), top bit clear."""


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An X25519 key pair; ``secret`` is the 32-byte RFC 7748 private key (never logged).

    ``private`` is the parsed key object, kept so that each agreement skips re-parsing.
    """

    secret: bytes
    public: bytes
    private: X25519PrivateKey = field(compare=False)


def generate_keypair() -> KeyPair:
    """Draw a fresh X25519 key pair from the OS CSPRNG (OpenSSL)."""
    key = X25519PrivateKey.generate()
    return KeyPair(
        secret=key.private_bytes_raw(), public=key.public_key().public_bytes_raw(), private=key
    )


def public_from_secret(secret: bytes) -> bytes:
    """Recompute the public key of a (reconstructed or revealed) private key."""
    return load_secret(secret).public_key().public_bytes_raw()


def load_public(public: bytes) -> X25519PublicKey:
    """Parse a raw 32-byte X25519 public key; small-order points raise ``ValueError``."""
    if len(public) != PUBLIC_KEY_BYTES:
        raise ValueError(f"X25519 public key must be {PUBLIC_KEY_BYTES} bytes")
    canonical = bytes(public[:31]) + bytes([public[31] & 0x7F])
    if canonical in _SMALL_ORDER:
        raise ValueError("X25519 public key is a point of small order")
    return X25519PublicKey.from_public_bytes(bytes(public))


def load_secret(secret: bytes) -> X25519PrivateKey:
    """Parse a raw 32-byte X25519 private key."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"X25519 private key must be {SECRET_BYTES} bytes")
    return X25519PrivateKey.from_private_bytes(bytes(secret))


def agree(secret: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    """Raw X25519 shared secret (32 bytes); symmetric in the two parties."""
    return secret.exchange(public)


def hkdf(shared: bytes, *, salt: bytes, info: bytes, length: int = SECRET_BYTES) -> bytes:
    """HKDF-SHA256 -> ``length`` bytes of key material bound to ``salt`` and ``info``."""
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(shared)
