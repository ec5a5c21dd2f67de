"""Merkle (optimistic) rounds, secagg side: the aggregator's leaf set and root, each
client's inclusion check, and the commitments a merkle round holds.

In a merkle round (``chain.commit_mode=merkle``) the ledger holds one root per round, not
the commitments: they are the signed leaves of the leaf set the aggregator stores (its
digest is in the ``RootPosted`` event). :func:`round_commitments` therefore reads them from
the store and keeps only leaves that the root on chain commits to and that are validly
signed by the selected client at their index for this round and manifest; everything that
reads commitments (the aggregator's collection, the key holder's check, the auditor) goes
through it, so a merkle round is checked exactly as a direct or batched one.

Clients sign their leaves before the round is on chain (the round id and the manifest
digest come with the manifest, :class:`MerkleDraft`); the aggregator opens the round with
the root in one transaction, and each client checks, before it reveals, that the round on
chain names the manifest it signed and holds its leaf.

Threat model: the aggregator chooses which signed leaves go under the root (it can censor),
and nothing on chain checks a leaf when the root is posted. Each client checks its own
inclusion proof before it reveals and, when its leaf is missing, proves the omission on
chain (the aggregator is flagged, the client counts as done). A leaf set withheld from the
store, or one that does not hash to the root, cannot be used for a proof: the auditor names
the aggregator for it. Leaves a challenge would catch (over budget) are named by the
auditor from the store too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from chain import (
    Address,
    Commitment,
    Digest,
    LeafSet,
    Ledger,
    MerkleFormatError,
    MerkleTree,
    RoundInfo,
    SignedCommit,
    leaf_hash,
)
from chain._merkle import MAX_LEAF_SET_BYTES, signer_of
from secagg._errors import CommitmentMismatchError
from secagg._store import ArtifactNotFoundError, ArtifactStore


@dataclass
class LeafCheck:
    """A merkle round's leaf set as checked against the ledger: the valid commitments, and
    each problem that puts the aggregator at fault (it built the leaf set)."""

    leaf_set: LeafSet | None
    commitments: list[Commitment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def _parsed(data: bytes) -> tuple[LeafSet, MerkleTree]:
    """A leaf set and its tree, parsed and hashed once per content (every client of a
    round checks the same leaf set; rebuilding it per client made rounds quadratic)."""
    leaf_set = LeafSet.from_bytes(data)
    return leaf_set, leaf_set.tree()


def _load(ledger: Ledger, store: ArtifactStore, info: RoundInfo) -> tuple[LeafSet, MerkleTree]:
    if info.merkle_root is None or info.leaves_digest is None:
        raise CommitmentMismatchError(f"round {info.round_id}: no root posted")
    try:
        leaf_set, tree = _parsed(store.get(info.leaves_digest, max_bytes=MAX_LEAF_SET_BYTES))
    except (ArtifactNotFoundError, MerkleFormatError, CommitmentMismatchError) as error:
        raise CommitmentMismatchError(
            f"round {info.round_id}: leaf set {info.leaves_digest.hex()} unusable: {error}"
        ) from error
    if (
        leaf_set.round_id != info.round_id
        or leaf_set.chain_id != ledger.chain_id
        or leaf_set.contract.lower() != ledger.address.lower()
        or tuple(c.lower() for c in leaf_set.clients) != tuple(c.lower() for c in info.clients)
    ):
        raise CommitmentMismatchError(
            f"round {info.round_id}: the leaf set is not over this round's selected clients"
        )
    if tree.root != info.merkle_root:
        raise CommitmentMismatchError(
            f"round {info.round_id}: the leaf set does not hash to the root on chain"
        )
    return leaf_set, tree


def check_leaves(ledger: Ledger, store: ArtifactStore, round_id: int) -> LeafCheck:
    """The round's leaf set checked against the root on chain, leaf by leaf."""
    info = ledger.round_info(round_id)
    try:
        leaf_set, _ = _load(ledger, store, info)
    except CommitmentMismatchError as error:
        if info.merkle_root is None:
            return LeafCheck(leaf_set=None)
        return LeafCheck(leaf_set=None, problems=[str(error)])
    check = LeafCheck(leaf_set=leaf_set)
    domain = leaf_set.domain
    root_event = next(iter(ledger.events("RootPosted", argument_filters={"round": round_id})))
    for client, signed in zip(leaf_set.clients, leaf_set.leaves, strict=True):
        if signed is None:
            continue
        problem = None
        if signed.client.lower() != client.lower() or signed.round_id != round_id:
            problem = "is not the leaf of the client at its index for this round"
        elif signer_of(signed, domain=domain) != client:
            problem = "carries no valid signature of the client"
        elif signed.manifest_digest != info.config_digest:
            problem = "names another manifest than the round's"
        if problem is not None:
            check.problems.append(f"round {round_id}: the leaf of {client} {problem}")
            continue
        check.commitments.append(
            Commitment(
                round_id=round_id,
                client=client,
                blob_digest=signed.blob_digest,
                event_digest=signed.event_digest,
                epsilon_fixed=signed.epsilon_fixed,
                block_number=root_event.block_number,
                tx_hash=root_event.tx_hash,
            )
        )
    if leaf_set.leaf_count != info.commits:
        check.problems.append(
            f"round {round_id}: {leaf_set.leaf_count} leaves under the root, {info.commits} "
            "declared on chain"
        )
    return check


def round_commitments(ledger: Ledger, store: ArtifactStore, round_id: int) -> list[Commitment]:
    """The round's commitments: from the ledger (direct, batched) or, for a merkle round,
    the valid leaves under its root (from the store; none if the leaf set is unusable)."""
    info = ledger.round_info(round_id)
    if not info.merkle:
        return ledger.commitments(round_id)
    return check_leaves(ledger, store, round_id).commitments


@dataclass(frozen=True)
class Inclusion:
    """A client's view of the root: whether its leaf is there, and the proof either way
    (``at_index`` is what the root holds at the client's index)."""

    included: bool
    at_index: Digest
    proof: tuple[Digest, ...]


def check_inclusion(
    ledger: Ledger,
    store: ArtifactStore,
    round_id: int,
    signed: SignedCommit,
    *,
    info: RoundInfo | None = None,
) -> Inclusion:
    """A client checks its signed leaf against the round's root (its inclusion proof).
    Raises :class:`~secagg._errors.CommitmentMismatchError` when no proof can be had (no
    root, or a leaf set withheld or not matching the root: the auditor names the
    aggregator). ``info``: the round as already read (saves a ledger read)."""
    leaf_set, tree = _load(ledger, store, info or ledger.round_info(round_id))
    index = leaf_set.index_of(signed.client)
    at_index = tree.levels[0][index]
    mine = leaf_hash(signed, domain=leaf_set.domain)
    return Inclusion(included=at_index == mine, at_index=at_index, proof=tuple(tree.proof(index)))


@dataclass(frozen=True)
class MerkleDraft:
    """A merkle round before it is on chain: what its manifest declares. Clients sign their
    leaves for this round id and manifest digest; the aggregator then opens the round with
    the root of the leaves it accepted (checked against the epsilon budget in force, which
    the opening snapshots)."""

    round_id: int
    config_digest: Digest
    clients: tuple[Address, ...]  # ascending addresses: the tree's index order
    epsilon_budget_fixed: int


def build_leaf_set(
    ledger: Ledger, info: RoundInfo | MerkleDraft, signed: Sequence[SignedCommit]
) -> tuple[LeafSet, dict[str, str]]:
    """The aggregator's leaf set: every signed commitment it accepts, at its client's index.

    Refused (``{client address: reason}``, left out of the root): a claim over the round's
    budget, a signature over another manifest or round, an invalid signature, a client
    not selected, or a second, different leaf of the same client (equivocation; the first
    is kept)."""
    clients = info.clients
    index = {c.lower(): i for i, c in enumerate(clients)}
    leaves: list[SignedCommit | None] = [None] * len(clients)
    refused: dict[str, str] = {}
    draft = LeafSet(
        round_id=info.round_id,
        chain_id=ledger.chain_id,
        contract=ledger.address,
        clients=clients,
        leaves=tuple(leaves),
    )
    domain = draft.domain
    for commit in signed:
        address = str(commit.client)
        i = index.get(address.lower())
        if i is None:
            refused[address] = "not selected for the round"
        elif commit.round_id != info.round_id or commit.manifest_digest != info.config_digest:
            refused[address] = "signed another round or manifest than the round's"
        elif commit.epsilon_fixed > info.epsilon_budget_fixed:
            refused[address] = "claimed epsilon over the budget"
        elif signer_of(commit, domain=domain) != clients[i]:
            refused[address] = "invalid signature"
        elif leaves[i] is not None:
            if leaves[i] != commit:
                refused[address] = "signed two different leaves (equivocation)"
        else:
            leaves[i] = commit
    return (
        LeafSet(
            round_id=info.round_id,
            chain_id=ledger.chain_id,
            contract=ledger.address,
            clients=clients,
            leaves=tuple(leaves),
        ),
        refused,
    )


__all__ = [
    "Inclusion",
    "LeafCheck",
    "MerkleDraft",
    "build_leaf_set",
    "check_inclusion",
    "check_leaves",
    "round_commitments",
]
