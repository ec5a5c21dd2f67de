"""Typed values of the ledger: digests, roles, epsilon fixed point, and frozen results.

Epsilon goes on chain as an unsigned integer in micro-epsilon (``EPSILON_SCALE`` = 1e6).
A claim is rounded UP (``epsilon_to_fixed``) so that the on-chain budget check is never
laxer than the real claim; a budget is rounded DOWN (``budget_to_fixed``) for the same reason.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, NewType

from eth_typing import ChecksumAddress
from eth_utils import keccak

from chain._errors import ChainConfigError

Digest = NewType("Digest", bytes)
"""A 32-byte keccak256 digest."""

Address = NewType("Address", ChecksumAddress)
"""A checksummed 20-byte account address (``0x`` + 40 hex digits)."""

EPSILON_SCALE = 1_000_000
"""On-chain epsilon unit: micro-epsilon."""

REPUTATION_SCALE = 1_000_000
"""Fixed-point scale of the on-chain reputation score."""

MAX_UINT64 = 2**64 - 1


class Role(enum.IntFlag):
    """Role bits of the consortium registry (must match the contract constants)."""

    CLIENT = 1
    AGGREGATOR = 2
    KEY_HOLDER = 4
    AUDITOR = 8
    COMMITTEE = 16


@dataclass(frozen=True)
class CommitteeInfo:
    """The decryption committee on chain: CRP seed, members (member i is ``members[i-1]``),
    threshold, and each member's committed key share digest (absent until committed)."""

    seed: Digest
    members: tuple[Address, ...]
    threshold: int
    share_digests: dict[int, Digest]

    @property
    def size(self) -> int:
        return len(self.members)

    def index_of(self, address: str) -> int:
        """Member index (1..K) of ``address``; ``KeyError`` if it is not a member."""
        wanted = address.lower()
        for index, member in enumerate(self.members, start=1):
            if member.lower() == wanted:
                return index
        raise KeyError(address)


class RoundStatus(enum.IntEnum):
    """Life cycle of a round on chain."""

    NONE = 0
    OPEN = 1
    AGGREGATED = 2
    RELEASING = 3
    REVEALED = 4
    REFUSED = 5
    FINALIZED = 6


def as_digest(value: bytes, *, field: str = "digest") -> Digest:
    """Check ``value`` is exactly 32 bytes and return it as a ``Digest``."""
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ChainConfigError(f"{field} must be 32 bytes (a keccak256 digest), got {value!r:.80}")
    return Digest(bytes(value))


def epsilon_to_fixed(epsilon: float, *, field: str = "epsilon") -> int:
    """Claimed epsilon -> micro-epsilon, rounded UP (never understates the claim)."""
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ChainConfigError(f"{field} must be a finite number >= 0, got {epsilon!r}")
    fixed = math.ceil(round(epsilon * EPSILON_SCALE, 6))
    if fixed > MAX_UINT64:
        raise ChainConfigError(f"{field} must be <= {MAX_UINT64 / EPSILON_SCALE}, got {epsilon}")
    return fixed


def budget_to_fixed(budget: float, *, field: str = "epsilon_budget") -> int:
    """Epsilon budget -> micro-epsilon, rounded DOWN (never loosens the budget)."""
    if not math.isfinite(budget) or budget < 0:
        raise ChainConfigError(f"{field} must be a finite number >= 0, got {budget!r}")
    fixed = math.floor(round(budget * EPSILON_SCALE, 6))
    if fixed > MAX_UINT64:
        raise ChainConfigError(f"{field} must be <= {MAX_UINT64 / EPSILON_SCALE}, got {budget}")
    return fixed


def epsilon_from_fixed(fixed: int) -> float:
    """Micro-epsilon -> epsilon."""
    return fixed / EPSILON_SCALE


@dataclass(frozen=True)
class TxResult:
    """Outcome of one mined ledger transaction."""

    tx_hash: bytes
    block_number: int
    gas_used: int
    function: str


@dataclass(frozen=True)
class SignedCommit:
    """A client's EIP-712 signature over (round, client, manifest, blob, event, epsilon).

    The typed-data domain binds the chain id and the ledger address, the message binds the
    round and the manifest digest the client saw: a signature is useless in another round,
    under another manifest, on another contract or on another chain.
    """

    round_id: int
    client: Address
    manifest_digest: Digest
    blob_digest: Digest
    event_digest: Digest
    epsilon_fixed: int
    v: int
    r: bytes
    s: bytes


@dataclass(frozen=True)
class SignedPublication:
    """The aggregator's EIP-712 signature over a merkle round's publication,
    ``Publish(uint256 round,bytes32 aggregateDigest,bytes32 participantsHash)``: the key
    holder sends it with its reservation (``Ledger.publish_and_reserve``), so the
    publication and the reservation are one transaction. ``participant_words`` is the
    bitmap over the selected list (bit i of word i // 256)."""

    round_id: int
    aggregate_digest: Digest
    participant_words: tuple[int, ...]
    aggregator: Address
    v: int
    r: bytes
    s: bytes

    @property
    def participants_hash(self) -> Digest:
        """keccak256 of the packed participant words (as the contract hashes them)."""
        return Digest(keccak(b"".join(w.to_bytes(32, "big") for w in self.participant_words)))


@dataclass(frozen=True)
class Commitment:
    """One client's commitment as recorded by a ``Committed`` event."""

    round_id: int
    client: Address
    blob_digest: Digest
    event_digest: Digest
    epsilon_fixed: int
    block_number: int
    tx_hash: bytes

    @property
    def epsilon(self) -> float:
        """Claimed cumulative epsilon (float)."""
        return epsilon_from_fixed(self.epsilon_fixed)


@dataclass(frozen=True)
class RoundInfo:
    """A round as recorded on chain (state plus the RoundOpened/AggregatePublished events).

    ``accumulator`` is the running commitment hash of batched rounds (None for direct ones,
    whose per-client commitment hashes are read with ``Ledger.commitment_hash``).
    ``deadline`` closes the commit phase, ``reveal_deadline`` the reveal phase (blocks,
    inclusive); ``commits`` and ``reveals`` count them so far (``reveals`` counts the
    clients' own reveal transactions; batched participants are marked revealed at
    publication). ``committed``/``missed`` are the finalize counts (done = committed and
    revealed). ``refusal_code`` is the key holder's attested reason when it refused.
    """

    round_id: int
    status: RoundStatus
    batched: bool
    config_digest: Digest
    clients: tuple[Address, ...]
    clients_hash: Digest
    deadline: int
    reveal_deadline: int
    commits: int
    reveals: int
    epsilon_budget_fixed: int
    accumulator: Digest | None
    aggregate_digest: Digest | None
    participants: tuple[Address, ...] | None
    participants_hash: Digest | None
    reveal_digest: Digest | None
    committed: int
    missed: int
    refusal_code: int = 0
    mode: str = "direct"
    merkle_root: Digest | None = None
    leaves_digest: Digest | None = None
    challenge_deadline: int | None = None

    @property
    def finalized(self) -> bool:
        """Whether the round is finalized."""
        return self.status is RoundStatus.FINALIZED

    @property
    def merkle(self) -> bool:
        """Whether the round is an optimistic (merkle-mode) round."""
        return self.mode == "merkle"

    def commit_phase_closed(self, block_number: int) -> bool:
        """Whether no client can commit any more at ``block_number`` (merkle rounds: once
        the aggregator posted the root)."""
        if self.merkle:
            return block_number > self.deadline or self.merkle_root is not None
        return block_number > self.deadline or self.commits == len(self.clients)


COMMIT_MODES = ("direct", "batched", "merkle")
"""Commit modes by their on-chain number (``Header.mode``)."""


_KEY_MASK = (1 << 240) - 1


def _word(value: int | bytes | str) -> bytes:
    if isinstance(value, str):  # an address
        return bytes.fromhex(value[2:]).rjust(32, b"\0")
    if isinstance(value, bytes):
        return value
    return value.to_bytes(32, "big")


def _key(*fields: int | bytes | str) -> bytes:
    """keccak256 of the ABI encoding of ``fields``, cut to its low 240 bits."""
    digest = int.from_bytes(keccak(b"".join(_word(f) for f in fields)), "big")
    return (digest & _KEY_MASK).to_bytes(32, "big")


@dataclass(frozen=True)
class MerkleState:
    """What a merkle round committed, header included, rebuilt from its events and its
    opening calldata; the contract stores only a hash chain of it (see :meth:`key`).

    ``aggregate_digest``/``participants_hash`` are zero until publication."""

    config_digest: Digest
    clients_hash: Digest
    reveal_deadline: int
    epsilon_budget_fixed: int
    num_clients: int
    challenge_window: int
    root: Digest
    leaf_count: int
    aggregator: Address
    aggregate_digest: Digest
    participants_hash: Digest

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple of the contract's ``MerkleState``."""
        return (
            self.config_digest,
            self.clients_hash,
            self.reveal_deadline,
            self.epsilon_budget_fixed,
            self.num_clients,
            self.challenge_window,
            self.root,
            self.leaf_count,
            self.aggregator,
            self.aggregate_digest,
            self.participants_hash,
        )

    @property
    def open_key(self) -> bytes:
        """k1 = keccak256(abi.encode(config, clients hash, reveal deadline, budget, n,
        window, root, leaf count, aggregator)), low 240 bits (the round as opened)."""
        return _key(*self.as_tuple()[:9])

    def key(self) -> bytes:
        """The hash chain the contract stores: k1, then k2 = keccak256(k1, aggregate,
        participants hash) (low 240 bits) once published."""
        if not any(self.participants_hash):
            return self.open_key
        return _key(self.open_key, self.aggregate_digest, self.participants_hash)


@dataclass(frozen=True)
class Reputation:
    """Subjective-logic reputation of one account (Kang et al. 2019)."""

    positive: int
    negative: int
    score_fixed: int

    @property
    def score(self) -> float:
        """Score b + a*u in [0, 1]."""
        return self.score_fixed / REPUTATION_SCALE


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event (from a paged reader)."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: bytes
    log_index: int
