"""Merkle commitments of optimistic rounds (``commit_mode=merkle``): leaves, tree, proofs.

Format version 1 (docs/formats.md, "Merkle commitments"), the same rules as the contract:

* a client's leaf is ``keccak256(0x00 || d)``, ``d`` the EIP-712 digest of its signed
  ``Commit(round, client, manifestDigest, blobDigest, eventDigest, epsilon)`` (the batched
  mode's typed data, so one signature format serves both modes);
* an index with no accepted commitment holds the empty leaf, 32 zero bytes (no keccak256
  output is known to be zero, so no signed leaf can pose as empty);
* an inner node is ``keccak256(0x01 || left || right)`` (the prefix byte separates leaves
  from nodes, so no node can pose as a leaf);
* the tree is index-ordered over the round's selected list (ascending addresses): leaf i
  belongs to selected client i, so non-inclusion is provable (the value at the client's
  index is not its leaf); the width is 2**depth, depth = ceil(log2 n) (n = 1: the root is
  the leaf), missing indices are empty leaves;
* a proof is ``depth`` sibling hashes, bottom-up; bit k of the index is 1 when the node is
  the right child at level k.

:class:`LeafSet` is the artifact the aggregator stores (its digest goes on chain with the
root): every accepted signed commitment by index, in canonical JSON, so clients get their
proofs and an auditor recomputes the root and checks every signature from the store alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_keys import keys
from eth_keys.exceptions import BadSignature
from eth_utils import keccak, to_checksum_address

from chain._eip712 import DOMAIN_NAME, DOMAIN_VERSION, SECP256K1_ORDER
from chain._errors import ChainConfigError
from chain._types import Address, Digest, SignedCommit

MERKLE_FORMAT_VERSION = 1
EMPTY_LEAF = Digest(bytes(32))
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
LEAF_SET_KIND = "secagg.merkle-leaves"
MAX_LEAF_SET_BYTES = 8 * 1024 * 1024

_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_COMMIT_TYPEHASH = keccak(
    text="Commit(uint256 round,address client,bytes32 manifestDigest,bytes32 blobDigest,"
    "bytes32 eventDigest,uint64 epsilon)"
)


class MerkleFormatError(ChainConfigError):
    """A leaf set or proof does not follow the merkle commitment format."""


def domain_separator(*, chain_id: int, verifying_contract: str) -> bytes:
    """EIP-712 domain separator of the ledger at ``verifying_contract`` on ``chain_id``."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                _DOMAIN_TYPEHASH,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                chain_id,
                to_checksum_address(verifying_contract),
            ],
        )
    )


def commit_digest(signed: SignedCommit, *, domain: bytes) -> Digest:
    """The EIP-712 digest a client signed for ``signed`` under ``domain``."""
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "uint256", "address", "bytes32", "bytes32", "bytes32", "uint64"],
            [
                _COMMIT_TYPEHASH,
                signed.round_id,
                to_checksum_address(signed.client),
                signed.manifest_digest,
                signed.blob_digest,
                signed.event_digest,
                signed.epsilon_fixed,
            ],
        )
    )
    return Digest(keccak(b"\x19\x01" + domain + struct_hash))


def leaf_hash(signed: SignedCommit, *, domain: bytes) -> Digest:
    """The tree leaf of a signed commitment: keccak256(0x00 || EIP-712 digest)."""
    return Digest(keccak(LEAF_PREFIX + commit_digest(signed, domain=domain)))


def node_hash(left: bytes, right: bytes) -> Digest:
    """An inner node: keccak256(0x01 || left || right)."""
    return Digest(keccak(NODE_PREFIX + left + right))


def signer_of(signed: SignedCommit, *, domain: bytes) -> Address | None:
    """The address that signed ``signed`` (None: malformed, high-s or unrecoverable), as
    the contract's check: low-s only, v in {27, 28}."""
    r = int.from_bytes(signed.r, "big")
    s = int.from_bytes(signed.s, "big")
    if signed.v not in (27, 28) or not 0 < r < SECP256K1_ORDER or not 0 < s <= SECP256K1_ORDER // 2:
        return None
    try:
        signature = keys.Signature(vrs=(signed.v - 27, r, s))
        public_key = signature.recover_public_key_from_msg_hash(
            commit_digest(signed, domain=domain)
        )
    except (BadSignature, ValueError):
        return None
    return Address(to_checksum_address(public_key.to_checksum_address()))


def tree_depth(n: int) -> int:
    """ceil(log2 n): the depth of the tree over ``n`` selected clients (n >= 1)."""
    if n < 1:
        raise MerkleFormatError(f"a merkle tree needs n >= 1 leaves, got {n}")
    return (n - 1).bit_length()


@dataclass(frozen=True)
class MerkleTree:
    """The index-ordered tree over ``leaves`` (one per selected client; EMPTY_LEAF if none)."""

    levels: tuple[tuple[Digest, ...], ...]

    @classmethod
    def build(cls, leaves: Sequence[bytes]) -> MerkleTree:
        depth = tree_depth(len(leaves))
        level = [Digest(bytes(leaf)) for leaf in leaves]
        level += [EMPTY_LEAF] * ((1 << depth) - len(level))
        levels = [tuple(level)]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            levels.append(tuple(level))
        return cls(levels=tuple(levels))

    @property
    def root(self) -> Digest:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[Digest]:
        """Sibling hashes of leaf ``index``, bottom-up."""
        if not 0 <= index < len(self.levels[0]):
            raise MerkleFormatError(f"index {index} is outside the tree")
        siblings = []
        for level in self.levels[:-1]:
            siblings.append(level[index ^ 1])
            index >>= 1
        return siblings


def verify_proof(root: bytes, n: int, index: int, value: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``value`` sits at ``index`` of the tree of ``root`` over ``n`` leaves."""
    if not 0 <= index < n or len(proof) != tree_depth(n):
        return False
    node = bytes(value)
    for level, sibling in enumerate(proof):
        pair = (node, sibling) if (index >> level) & 1 == 0 else (sibling, node)
        node = node_hash(*pair)
    return node == bytes(root)


def _signed_to_json(signed: SignedCommit) -> dict[str, object]:
    return {
        "client": signed.client,
        "manifest_digest": "0x" + signed.manifest_digest.hex(),
        "blob_digest": "0x" + signed.blob_digest.hex(),
        "event_digest": "0x" + signed.event_digest.hex(),
        "epsilon_fixed": signed.epsilon_fixed,
        "v": signed.v,
        "r": "0x" + signed.r.hex(),
        "s": "0x" + signed.s.hex(),
    }


def _hex32(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise MerkleFormatError(f"leaf set: {field} must be 0x + 64 hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as error:
        raise MerkleFormatError(f"leaf set: {field} is not hex") from error


def _signed_from_json(round_id: int, row: object) -> SignedCommit:
    if not isinstance(row, dict):
        raise MerkleFormatError("leaf set: a leaf must be an object or null")
    try:
        epsilon, v = row["epsilon_fixed"], row["v"]
        if not isinstance(epsilon, int) or not 0 <= epsilon < 2**64 or not isinstance(v, int):
            raise MerkleFormatError("leaf set: epsilon_fixed and v must be integers in range")
        return SignedCommit(
            round_id=round_id,
            client=Address(to_checksum_address(row["client"])),
            manifest_digest=Digest(_hex32(row["manifest_digest"], "manifest_digest")),
            blob_digest=Digest(_hex32(row["blob_digest"], "blob_digest")),
            event_digest=Digest(_hex32(row["event_digest"], "event_digest")),
            epsilon_fixed=epsilon,
            v=v,
            r=_hex32(row["r"], "r"),
            s=_hex32(row["s"], "s"),
        )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, MerkleFormatError):
            raise
        raise MerkleFormatError(f"leaf set: malformed leaf: {error}") from error


@dataclass(frozen=True)
class LeafSet:
    """The signed commitments under one round's root, by index of the selected list.

    ``leaves[i]`` is the commitment the aggregator accepted for ``clients[i]`` (None: the
    empty leaf). Canonical bytes: sorted-key, compact JSON (version 1)."""

    round_id: int
    chain_id: int
    contract: Address
    clients: tuple[Address, ...]
    leaves: tuple[SignedCommit | None, ...]

    def __post_init__(self) -> None:
        if len(self.leaves) != len(self.clients) or not self.clients:
            raise MerkleFormatError("leaf set: one leaf (or null) per selected client")

    @property
    def domain(self) -> bytes:
        return domain_separator(chain_id=self.chain_id, verifying_contract=self.contract)

    def leaf_hashes(self) -> list[Digest]:
        domain = self.domain
        return [EMPTY_LEAF if s is None else leaf_hash(s, domain=domain) for s in self.leaves]

    def tree(self) -> MerkleTree:
        return MerkleTree.build(self.leaf_hashes())

    @property
    def leaf_count(self) -> int:
        return sum(1 for s in self.leaves if s is not None)

    def index_of(self, client: str) -> int:
        wanted = client.lower()
        for index, address in enumerate(self.clients):
            if address.lower() == wanted:
                return index
        raise KeyError(client)

    def canonical_bytes(self) -> bytes:
        doc = {
            "kind": LEAF_SET_KIND,
            "version": MERKLE_FORMAT_VERSION,
            "round": self.round_id,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "clients": list(self.clients),
            "leaves": [None if s is None else _signed_to_json(s) for s in self.leaves],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeafSet:
        if len(data) > MAX_LEAF_SET_BYTES:
            raise MerkleFormatError(f"leaf set over {MAX_LEAF_SET_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise MerkleFormatError(f"leaf set is not JSON: {error}") from error
        if not isinstance(doc, dict) or doc.get("kind") != LEAF_SET_KIND:
            raise MerkleFormatError("not a merkle leaf set")
        if doc.get("version") != MERKLE_FORMAT_VERSION:
            raise MerkleFormatError(f"leaf set version {doc.get('version')!r} is not supported")
        round_id, chain_id = doc.get("round"), doc.get("chain_id")
        if not isinstance(round_id, int) or not isinstance(chain_id, int):
            raise MerkleFormatError("leaf set: round and chain_id must be integers")
        clients, leaves = doc.get("clients"), doc.get("leaves")
        if not isinstance(clients, list) or not isinstance(leaves, list):
            raise MerkleFormatError("leaf set: clients and leaves must be lists")
        try:
            addresses = tuple(Address(to_checksum_address(c)) for c in clients)
            contract = Address(to_checksum_address(doc.get("contract")))
        except (TypeError, ValueError) as error:
            raise MerkleFormatError(f"leaf set: bad address: {error}") from error
        return cls(
            round_id=round_id,
            chain_id=chain_id,
            contract=contract,
            clients=addresses,
            leaves=tuple(
                None if row is None else _signed_from_json(round_id, row) for row in leaves
            ),
        )
