"""X25519 key agreement and HKDF-SHA256 key derivation (pycryptodome).

Each client holds two X25519 key pairs per round: ``c`` to encrypt shares and ``s`` to
derive pairwise masks (Bonawitz et al. keep them apart so that reconstructing a dropped
client's ``s`` key never opens the share channels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from Crypto.Hash import SHA256
from Crypto.Protocol.DH import (
    import_x25519_private_key,
    import_x25519_public_key,
    key_agreement,
)
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

from secagg.masking._constants import PUBLIC_KEY_BYTES, SECRET_BYTES


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An X25519 key pair; ``secret`` is the 32-byte RFC 7748 private key (never logged).

    ``private`` is the parsed key object, kept so that each agreement skips re-parsing.
    """

    secret: bytes
    public: bytes
    private: ECC.EccKey = field(compare=False)


def generate_keypair() -> KeyPair:
    """Draw a fresh X25519 key pair from the OS CSPRNG."""
    key = ECC.generate(curve="curve25519")
    return KeyPair(
        secret=bytes(key.seed), public=key.public_key().export_key(format="raw"), private=key
    )


def public_from_secret(secret: bytes) -> bytes:
    """Recompute the public key of a (reconstructed) private key."""
    key = import_x25519_private_key(secret)
    return bytes(key.public_key().export_key(format="raw"))


def load_public(public: bytes) -> ECC.EccKey:
    """Parse and validate a raw 32-byte X25519 public key (raises ``ValueError``)."""
    if len(public) != PUBLIC_KEY_BYTES:
        raise ValueError(f"X25519 public key must be {PUBLIC_KEY_BYTES} bytes")
    return import_x25519_public_key(public)


def load_secret(secret: bytes) -> ECC.EccKey:
    """Parse a raw 32-byte X25519 private key."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"X25519 private key must be {SECRET_BYTES} bytes")
    return import_x25519_private_key(secret)


def agree(secret: ECC.EccKey, public: ECC.EccKey) -> bytes:
    """Raw X25519 shared secret (32 bytes); symmetric in the two parties."""
    return bytes(key_agreement(static_priv=secret, static_pub=public, kdf=lambda z: bytes(z)))


def hkdf(shared: bytes, *, salt: bytes, info: bytes, length: int = SECRET_BYTES) -> bytes:
    """HKDF-SHA256 -> ``length`` bytes of key material bound to ``salt`` and ``info``."""
    key = HKDF(shared, length, salt, SHA256, context=info)
    if not isinstance(key, bytes):  # HKDF returns a tuple only when num_keys > 1
        raise TypeError("HKDF returned several keys")
    return key
