"""Party keys derived from a seed (``secagg._party_keys``, ``Parties.derive``).

The derivation is checked against an independent HKDF-SHA256 written here from RFC 5869
with the standard library (``hmac``), not against numbers copied from the code's output.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from eth_account import Account

from secagg import Parties, PartyKeyError, SecAggError, derive_party_key, read_seed_file
from secagg._party_keys import SALT, SECP256K1_ORDER

SEED = bytes(range(64))


def _rfc5869(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def test_keys_are_hkdf_sha256_of_the_seed_per_role_and_index() -> None:
    for role, index in (("admin", 0), ("aggregator", 0), ("key_holder", 0), ("client", 7)):
        expected = _rfc5869(SEED, salt=SALT, info=f"{role}/{index}/0".encode())
        assert 0 < int.from_bytes(expected, "big") < SECP256K1_ORDER
        assert derive_party_key(SEED, role=role, index=index) == expected


def test_every_party_gets_its_own_key_and_another_seed_gives_other_keys() -> None:
    parties = Parties.derive(5, seed=SEED)
    addresses = parties.addresses()
    flat = [addresses[r] for r in ("admin", "aggregator", "key_holder", "auditor")]
    flat += list(addresses["clients"])
    assert len(set(flat)) == 9
    assert addresses == Parties.derive(5, seed=SEED).addresses()  # deterministic
    other = Parties.derive(5, seed=SEED[:-1] + b"\xff").addresses()
    assert not set(flat) & {other["admin"], other["aggregator"], *other["clients"]}
    # Client ids ascend with the addresses, as with fresh accounts.
    assert list(addresses["clients"]) == sorted(addresses["clients"], key=str.lower)
    client_keys = {
        Account.from_key(derive_party_key(SEED, role="client", index=i)).address for i in range(5)
    }
    assert set(addresses["clients"]) == client_keys
    for role in ("admin", "aggregator", "key_holder", "auditor"):  # repr shows no key
        assert derive_party_key(SEED, role=role).hex() not in repr(parties)


def test_a_seed_file_is_read_stripped_and_a_short_or_missing_one_is_refused(
    tmp_path: Path,
) -> None:
    good = tmp_path / "party.seed"
    good.write_text(SEED.hex() + "\n")
    assert read_seed_file(good) == SEED.hex().encode()
    short = tmp_path / "short.seed"
    short.write_text("0123456789abcdef\n")
    with pytest.raises(PartyKeyError, match=r"short\.seed holds 16 byte\(s\), need at least 32"):
        read_seed_file(short)
    with pytest.raises(PartyKeyError, match="cannot be read"):
        read_seed_file(tmp_path / "missing.seed")
    big = tmp_path / "big.seed"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(PartyKeyError, match="larger than"):
        read_seed_file(big)
    assert issubclass(PartyKeyError, SecAggError) and issubclass(PartyKeyError, ValueError)


@pytest.mark.parametrize(
    ("role", "index", "match"),
    [("miner", 0, "role must be one of"), ("admin", 1, "only clients"), ("client", -1, ">= 0")],
)
def test_bad_roles_and_indices_are_refused(role: str, index: int, match: str) -> None:
    with pytest.raises(PartyKeyError, match=match):
        derive_party_key(SEED, role=role, index=index)
    with pytest.raises(PartyKeyError, match="at least 32 bytes"):
        derive_party_key(SEED[:31], role="admin")
