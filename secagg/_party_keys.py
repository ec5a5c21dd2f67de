"""Ledger account keys of every party, derived from one seed supplied at run time.

Without a seed each party's account is a fresh key that lives in one process's memory
(:meth:`secagg.Parties.create`). With a seed (``chain.keys_seed_file``: a file the
operator keeps, read at start and never copied, logged or written) every key is derived
from it, so another process, e.g. a resumed run or the next run of the same consortium,
acts as the same parties on the same contract. Only the derived ADDRESSES are ever
recorded (checkpoint, ``results.json``); they are public on chain anyway.

Derivation (docs/formats.md, "Party keys"): HKDF-SHA256 (RFC 5869) with the seed file's
bytes (trailing whitespace stripped, at least :data:`MIN_SEED_BYTES`) as input keying
material, salt ``secagg-fl/party-keys/v1`` and info ``<role>/<index>/<attempt>``; the 32
output bytes, read big-endian, are the secp256k1 private key when in ``[1, n-1]``,
else the next attempt is taken (probability about 2^-128). Roles: ``admin``,
``aggregator``, ``key_holder``, ``auditor`` (index 0) and ``client`` (index 0..N-1).

Threat model: whoever holds the seed can act as every party of the consortium (sign
commitments, publish aggregates, release); it is as sensitive as all their keys
together. A run directory never holds it, so a copied run directory cannot resume.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg._errors import PartyKeyError

__all__ = ["MIN_SEED_BYTES", "PARTY_ROLES", "derive_party_key", "read_seed_file"]

SALT = b"secagg-fl/party-keys/v1"
MIN_SEED_BYTES = 32
MAX_SEED_BYTES = 4096
PARTY_ROLES = ("admin", "aggregator", "key_holder", "auditor", "client")
# The order of secp256k1's group: a private key is an integer in [1, n-1].
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def read_seed_file(path: str | os.PathLike[str]) -> bytes:
    """The seed in the file at ``path`` (trailing whitespace stripped).

    Raises :class:`PartyKeyError` naming the path (never the content) when the file
    cannot be read, is larger than :data:`MAX_SEED_BYTES` or holds fewer than
    :data:`MIN_SEED_BYTES` bytes (e.g. ``openssl rand -hex 32 > seed`` gives 64).
    """
    location = Path(path)
    try:
        if location.stat().st_size > MAX_SEED_BYTES:
            raise PartyKeyError(
                f"keys_seed_file {location} is larger than {MAX_SEED_BYTES} bytes: not a seed"
            )
        seed = location.read_bytes().rstrip()
    except OSError as error:
        raise PartyKeyError(
            f"keys_seed_file {location} cannot be read ({error.strerror})"
        ) from None
    if len(seed) < MIN_SEED_BYTES:
        raise PartyKeyError(
            f"keys_seed_file {location} holds {len(seed)} byte(s), need at least "
            f"{MIN_SEED_BYTES} (e.g. `openssl rand -hex 32 > {location.name}`)"
        )
    return seed


def derive_party_key(seed: bytes, *, role: str, index: int = 0) -> bytes:
    """The 32-byte secp256k1 private key of party ``role``/``index`` under ``seed``."""
    if role not in PARTY_ROLES:
        raise PartyKeyError(f"role must be one of {list(PARTY_ROLES)}, got {role!r}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise PartyKeyError(f"index must be an int >= 0, got {index!r}")
    if role != "client" and index != 0:
        raise PartyKeyError(f"only clients have an index; {role} has index 0, got {index}")
    if not isinstance(seed, bytes) or len(seed) < MIN_SEED_BYTES:
        raise PartyKeyError(f"the seed must be at least {MIN_SEED_BYTES} bytes")
    attempt = 0
    while True:
        info = f"{role}/{index}/{attempt}".encode("ascii")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(seed)
        if 0 < int.from_bytes(key, "big") < SECP256K1_ORDER:
            return key
        attempt += 1
