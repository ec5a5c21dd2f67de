"""The parties of a round and what each does: client, aggregator, key holder.

Each party touches only what its role allows (DESIGN.md, "Roles"):

* :class:`ClientParty` protects its own weighted update through the scheme, puts the blob
  and its privacy event in the artifact store, and commits both digests and its claimed
  cumulative epsilon on the ledger (directly, or signed for the aggregator's batch).
* :class:`AggregatorParty` opens the round with the manifest's digest, reads the
  commitments *from the ledger* (so a restarted aggregator resumes from ledger and store
  and counts no client twice), fetches and checks each blob against its commitment,
  combines blindly, publishes the aggregate digest and participants, and finalizes.
* :class:`KeyHolderParty` (CKKS) decrypts only an aggregate whose digest is the one
  published on the ledger and whose listed inputs are exactly the participants' committed
  blobs; it stores what it released and attests its digest. For masking there is no key
  holder: the aggregator unmasks with the survivors' shares, and the same checks apply.

Threat model: aggregator and key holder honest-but-curious and not colluding; clients may
drop out or send malformed blobs (each is rejected alone and the round carries on).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from eth_account.signers.local import LocalAccount

from chain import EPSILON_SCALE, Commitment, SignedCommit, TxResult
from secagg._consortium import Consortium
from secagg._digest import Digest, keccak256
from secagg._errors import CommitmentMismatchError
from secagg._manifest import RoundManifest
from secagg._recombine import aggregate_inputs
from secagg._scheme import RoundSession
from secagg._store import ArtifactNotFoundError

ZERO_DIGEST = Digest(bytes(32))


class PrivacyEventLike(Protocol):
    """What the protocol needs of a ``dp`` privacy event."""

    @property
    def cumulative_epsilon(self) -> float: ...

    def canonical_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class Submission:
    """What a client sent in one round."""

    client_id: int
    blob_digest: Digest
    event_digest: Digest
    epsilon: float
    tx: TxResult | None = None
    signed: SignedCommit | None = None


@dataclass
class Collected:
    """Blobs the aggregator fetched for the round's commitments, and those it rejected."""

    blobs: dict[int, bytes] = field(default_factory=dict)
    commitments: dict[int, Commitment] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)


class ClientParty:
    """One hospital's side of the round protocol."""

    def __init__(self, *, client_id: int, consortium: Consortium) -> None:
        self.client_id = client_id
        self.consortium = consortium

    def submit(
        self,
        round_id: int,
        session: RoundSession,
        weighted_update: np.ndarray,
        event: PrivacyEventLike | None,
    ) -> Submission:
        """Protect, store and commit one update (signed only, in batched rounds).

        The privacy event is stored first: the privacy was spent in training whether or
        not the update is accepted, and the client's next event links to this one."""
        store = self.consortium.store
        if event is None:
            event_digest, epsilon = ZERO_DIGEST, 0.0
        else:
            event_digest, epsilon = store.put(event.canonical_bytes()), event.cumulative_epsilon
        blob = session.protect(self.client_id, weighted_update)
        blob_digest = store.put(blob)
        account = self.consortium.account_of(self.client_id)
        ledger = self.consortium.ledger
        if self.consortium.batch_commits:
            signed = ledger.sign_commit(
                account,
                round_id=round_id,
                blob_digest=blob_digest,
                event_digest=event_digest,
                epsilon=epsilon,
            )
            return Submission(self.client_id, blob_digest, event_digest, epsilon, signed=signed)
        tx = ledger.commit(
            round_id,
            blob_digest=blob_digest,
            event_digest=event_digest,
            epsilon=epsilon,
            sender=account,
        )
        return Submission(self.client_id, blob_digest, event_digest, epsilon, tx=tx)


class AggregatorParty:
    """Opens rounds, combines blindly, publishes, finalizes; never decrypts."""

    def __init__(self, *, consortium: Consortium) -> None:
        self.consortium = consortium

    @property
    def _account(self) -> LocalAccount:
        return self.consortium.parties.aggregator

    def select(self, candidates: Collection[int]) -> list[int]:
        """Candidates whose on-chain reputation is at least the consortium's threshold."""
        threshold = self.consortium.reputation_threshold
        if threshold <= 0:
            return sorted(candidates)
        kept = self.consortium.ledger.filter_by_reputation(
            self.consortium.addresses_of(sorted(candidates)), threshold=threshold
        )
        return [self.consortium.client_id_of(address) for address in kept]

    def open_round(self, manifest: RoundManifest) -> TxResult:
        """Store the manifest and open the round with its digest as the config digest."""
        ledger = self.consortium.ledger
        config_digest = self.consortium.store.put(manifest.canonical_bytes())
        return ledger.open_round(
            manifest.round_id,
            config_digest=config_digest,
            clients=[c.address for c in manifest.clients],
            deadline=ledger.block_number() + self.consortium.deadline_blocks,
            batched=self.consortium.batch_commits,
            sender=self._account,
        )

    def submit_batch(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        """Batched rounds: put the clients' signed commitments on chain in one transaction.

        The contract reverts a whole batch for one bad row, so rows it would refuse (a
        claim over the round's budget) are left out first and returned as
        ``{client address: reason}``; the others still commit."""
        budget = self.consortium.ledger.round_info(round_id).epsilon_budget_fixed
        refused: dict[str, str] = {
            str(c.client): f"claimed epsilon {c.epsilon_fixed / EPSILON_SCALE:.6f} over the budget"
            for c in signed
            if c.epsilon_fixed > budget
        }
        accepted = [c for c in signed if c.client not in refused]
        if not accepted:
            return None, refused
        tx = self.consortium.ledger.commit_batch(round_id, accepted, sender=self._account)
        return tx, refused

    def manifest(self, round_id: int) -> RoundManifest:
        """The round's manifest, fetched by the config digest on the ledger and checked."""
        info = self.consortium.ledger.round_info(round_id)
        return RoundManifest.from_bytes(self.consortium.store.get(info.config_digest))

    def collect(self, round_id: int, manifest: RoundManifest) -> Collected:
        """Fetch every committed blob from the store; a missing or altered one is rejected."""
        collected = Collected()
        for commitment in self.consortium.ledger.commitments(round_id):
            member = manifest.client_by_address(commitment.client)
            if member is None:  # the contract only accepts selected clients
                continue
            client_id = member.client_id
            if client_id in collected.commitments:
                continue  # one commitment per client and round; never count a client twice
            collected.commitments[client_id] = commitment
            try:
                collected.blobs[client_id] = self.consortium.store.get(commitment.blob_digest)
            except (ArtifactNotFoundError, CommitmentMismatchError) as error:
                collected.rejected[client_id] = f"{type(error).__name__}: {error}"
        return collected

    def combine_and_publish(
        self, round_id: int, session: RoundSession, collected: Collected
    ) -> tuple[bytes, TxResult]:
        """Combine the valid blobs, store the aggregate, publish its digest and participants."""
        aggregate = session.combine(collected.blobs)
        for client_id in collected.blobs:
            if client_id not in session.combined:
                collected.rejected.setdefault(client_id, "rejected by the scheme's combine")
        aggregate_digest = self.consortium.store.put(aggregate)
        tx = self.consortium.ledger.publish_aggregate(
            round_id,
            aggregate_digest=aggregate_digest,
            participants=self.consortium.addresses_of(session.combined),
            sender=self._account,
        )
        return aggregate, tx

    def finalize(self, round_id: int) -> TxResult:
        return self.consortium.ledger.finalize(round_id, sender=self._account)


class KeyHolderParty:
    """Releases a round's sum only for the aggregate the ledger says was published."""

    def __init__(self, *, consortium: Consortium, attests: bool) -> None:
        self.consortium = consortium
        self.attests = attests

    def check_aggregate(self, round_id: int, manifest: RoundManifest, aggregate: bytes) -> None:
        """Refuse an aggregate that is not the published one, or whose listed inputs are not
        exactly the participants' committed blobs (in participant order)."""
        ledger = self.consortium.ledger
        info = ledger.round_info(round_id)
        digest = keccak256(aggregate)
        if info.aggregate_digest != digest:
            raise CommitmentMismatchError(
                f"round {round_id}: aggregate digest {digest.hex()} is not the published one"
            )
        inputs = aggregate_inputs(manifest, aggregate)
        if inputs is None:
            return
        committed = {c.client.lower(): c.blob_digest for c in ledger.commitments(round_id)}
        expected = tuple(committed.get(p.lower(), ZERO_DIGEST) for p in info.participants or ())
        if tuple(inputs) != expected:
            raise CommitmentMismatchError(
                f"round {round_id}: the aggregate's inputs are not the participants' commitments"
            )

    def reveal(
        self,
        round_id: int,
        manifest: RoundManifest,
        session: RoundSession,
        aggregate: bytes,
        *,
        survivors: Collection[int],
    ) -> tuple[np.ndarray, TxResult | None]:
        """Check, release the sum, store it and (CKKS) attest its digest on the ledger."""
        self.check_aggregate(round_id, manifest, aggregate)
        total = session.reveal(aggregate, survivors=survivors)
        reveal_digest = self.consortium.store.put(np.asarray(total, dtype="<f8").tobytes())
        tx = None
        if self.attests:
            tx = self.consortium.ledger.attest_reveal(
                round_id, reveal_digest=reveal_digest, sender=self.consortium.parties.key_holder
            )
        return total, tx


__all__ = [
    "ZERO_DIGEST",
    "AggregatorParty",
    "ClientParty",
    "Collected",
    "KeyHolderParty",
    "Submission",
]
