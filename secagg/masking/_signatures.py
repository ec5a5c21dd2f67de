"""Signatures of the actively secure rounds: ledger accounts certify per-round Ed25519 keys.

Bonawitz et al. (2017, section 4, "malicious server") assume a PKI so that the server
cannot substitute a client's keys and cannot fake a client's statements. Ours is the
ledger's registry: each client signs its key advertisement with its ledger account
(secp256k1, EIP-191 ``personal_sign`` over a labelled keccak digest), and every receiver
checks that the signature recovers the address registered for that client id. The
advertisement also carries a fresh Ed25519 *round signing key*; the client's later
statements in the round (its accusations the survivor set of the
consistency check) are signed with it, which is as binding as the ledger key (the ledger
key certified it) and much cheaper to verify in bulk.

Every signed statement is the keccak256 digest of a domain label, the round, the round
parameters' digest, the signer's id and the statement's fields, so a signature never
transfers to another round, other parameters, another client or another purpose.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from secagg._digest import keccak256
from secagg.masking._constants import (
    LABEL_ACCUSATION,
    LABEL_ADVERTISEMENT,
    LABEL_CONSISTENCY,
    LABEL_SHARE_ITEM,
    LEDGER_SIGNATURE_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
)


@dataclass(frozen=True, repr=False)
class SigningKey:
    """An Ed25519 round signing key; ``public`` is its 32-byte RFC 8032 encoding."""

    public: bytes
    private: Ed25519PrivateKey = field(compare=False)


def generate_signing_key() -> SigningKey:
    """A fresh Ed25519 key pair from the OS CSPRNG (OpenSSL, through ``cryptography``)."""
    key = Ed25519PrivateKey.generate()
    return SigningKey(public=key.public_key().public_bytes_raw(), private=key)


def sign(key: SigningKey, digest: bytes) -> bytes:
    """Ed25519 signature (64 bytes) of a statement digest."""
    return key.private.sign(digest)


def verify(public: bytes, digest: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``digest`` under ``public``."""
    if len(public) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, digest)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_with_account(account: LocalAccount, digest: bytes) -> bytes:
    """EIP-191 (``personal_sign``) signature of ``digest`` by a ledger account: r|s|v."""
    signed = account.sign_message(encode_defunct(primitive=digest))
    return bytes(signed.signature)


def recover_account(digest: bytes, signature: bytes) -> str | None:
    """The address that made an EIP-191 signature of ``digest``, or ``None`` if malformed."""
    if len(signature) != LEDGER_SIGNATURE_BYTES:
        return None
    try:
        return str(Account.recover_message(encode_defunct(primitive=digest), signature=signature))
    except Exception:  # eth_keys raises several unrelated types on malformed signatures
        return None


def same_address(first: str | None, second: str) -> bool:
    """Case-insensitive comparison of two hex addresses (``None`` never matches)."""
    return first is not None and first.lower() == second.lower()


def _statement(label: bytes, round_id: int, params_digest: bytes, signer: int) -> bytes:
    return label + struct.pack("<Q", round_id) + params_digest + struct.pack("<Q", signer)


def advertisement_digest(
    *,
    round_id: int,
    params_digest: bytes,
    client_id: int,
    encryption_key: bytes,
    masking_key: bytes,
    self_mask_commitment: bytes,
    signing_key: bytes,
) -> bytes:
    """What a client's ledger account signs: its round's public keys and seed commitment."""
    body = encryption_key + masking_key + self_mask_commitment + signing_key
    return bytes(
        keccak256(_statement(LABEL_ADVERTISEMENT, round_id, params_digest, client_id) + body)
    )


def share_item_digest(
    *,
    round_id: int,
    params_digest: bytes,
    sender: int,
    receiver: int,
    ephemeral_key: bytes,
    nonce: bytes,
    sealed: bytes,
) -> bytes:
    """Digest of one sealed share item as its sender made it (accusations name it)."""
    body = struct.pack("<Q", receiver) + ephemeral_key + nonce + sealed
    return bytes(keccak256(_statement(LABEL_SHARE_ITEM, round_id, params_digest, sender) + body))


def accusation_digest(
    *, round_id: int, params_digest: bytes, reporter: int, accused: int, item_digest: bytes
) -> bytes:
    """What a reporter signs: "the item with this digest from ``accused`` failed to open"."""
    body = struct.pack("<Q", accused) + item_digest
    return bytes(keccak256(_statement(LABEL_ACCUSATION, round_id, params_digest, reporter) + body))


def consistency_digest(
    *, round_id: int, params_digest: bytes, signer: int, survivors: Iterable[int]
) -> bytes:
    """What a client signs in the consistency check: the survivor set it was told."""
    ids = sorted(survivors)
    body = struct.pack(f"<I{len(ids)}Q", len(ids), *ids)
    return bytes(keccak256(_statement(LABEL_CONSISTENCY, round_id, params_digest, signer) + body))
