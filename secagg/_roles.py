"""The parties of a round and what each does: client, aggregator, key holder.

Each party touches only what its role allows (docs/architecture.md, "Roles"). A round has a commit
phase and then a reveal phase, both enforced by the ledger contract:

* :class:`ClientParty` protects its own weighted update through the scheme and, in the
  commit phase, puts only digests on the ledger (blob, privacy event, claimed cumulative
  epsilon and the manifest digest it saw; batched rounds: signs them for the aggregator's
  batch, and commits itself if the batch leaves it out; merkle rounds: signs its leaf for
  the manifest it received, before the round is on chain, and before revealing checks that
  the opened round names that manifest and its inclusion proof against the root, proving
  an omission there if its leaf is missing). It keeps the blob private until the commit phase is
  closed; then it puts the blob in the store and (direct rounds) records its reveal with
  one transaction. Its privacy event goes to the store at commit time: the
  privacy was spent whether or not the update is used, and its next event links to it.
* :class:`AggregatorParty` opens the round with the manifest's digest (merkle rounds:
  stores the leaf set of the signed commitments it accepts and opens the round with its
  root, one transaction; in CKKS merkle rounds it signs the publication and the key
  holder sends it with its reservation), reads the
  commitments *from the ledger* (so a restarted aggregator resumes from ledger and store
  and counts no client twice), fetches and checks each revealed blob against its
  commitment, combines blindly, publishes the aggregate digest and participants, and
  finalizes.
* :class:`KeyHolderParty` (CKKS) releases a round's sum once: :func:`check_aggregate`
  recombines the participants' committed blobs itself and compares the bytes with the
  published aggregate; only then does it reserve the release on the ledger, decrypt (flooding
  noise from a PRF of the aggregate, so a repeat gives identical bytes), store and attest.
  A refusal is attested on chain with its reason code. For masking there is no key holder:
  the aggregator unmasks with the survivors' shares.

Threat model per role (what holds when the role is honest-but-curious (HbC) or malicious;
the protocol-wide table is in the README):

=============  ===============================  ==========================================
role           guaranteed / stopped before       detected after the fact / out of scope
               release
=============  ===============================  ==========================================
client         HbC: sees only the aggregate.     Malicious: an invalid blob or a lying
               Malicious: cannot read, copy or   privacy event is named by the auditor and
               cancel another blob (blobs are    flagged. Out of scope: no proof of
               private until commits close);     plaintext knowledge or of honest
               commits late or twice revert;     training (a client may send any valid
               commit without reveal = dropout   ciphertext of its choosing); sample-level
               with a negative event.            DP bounds what any isolated update shows.
aggregator     HbC: sees ciphertexts/masked      Malicious: leaving out a committed,
               vectors only. Malicious: cannot   revealed, valid blob, or a manifest no
               publish before commits close, nor honest blob satisfies, is named by the
               without a committed client before auditor; the client keeps its positive
               the reveal deadline; a payload    event. Out of scope: an aggregator that
               that is not the recombined        leaks blobs early to a colluding client
               committed blobs is refused by the (it sees them when they are revealed, not
               key holder before decryption.     before); colluding with the key holder.
key holder     HbC: sees only sums of at least   Malicious: a reservation never attested,
               min_clients committed blobs.      or a refusal whose reason does not hold,
               One release per round (ledger     is named by the auditor. Out of scope: the
               reservation); repeats give        decryption itself is attested, not proven;
               identical bytes (PRF flooding).   decrypting off the protocol (collusion).
=============  ===============================  ==========================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from chain import (
    EPSILON_SCALE,
    Address,
    ChainError,
    Commitment,
    LeafSet,
    Ledger,
    RoundInfo,
    RoundStatus,
    SignedCommit,
    SignedPublication,
    TxResult,
)
from chain import Digest as LedgerDigest
from dp import SecureGaussian
from secagg._consortium import Consortium
from secagg._digest import Digest, keccak256
from secagg._errors import (
    CommitmentMismatchError,
    InsufficientClientsError,
    InvalidUpdateError,
    ProtocolAbortError,
    SecAggError,
)
from secagg._hydra import scheme_class
from secagg._manifest import PrivacyPolicy, RoundManifest
from secagg._merkle_round import (
    MerkleDraft,
    build_leaf_set,
    check_inclusion,
    round_commitments,
)
from secagg._recombine import aggregate_inputs, recombine
from secagg._scheme import RoundSession
from secagg._store import ArtifactNotFoundError, ArtifactStore

ZERO_DIGEST = Digest(bytes(32))

# Reason codes a key holder attests on chain when it refuses a release.
REFUSAL_AGGREGATE_MISMATCH = 1
REFUSAL_TOO_FEW_INPUTS = 2
REFUSAL_INVALID_AGGREGATE = 3
REFUSAL_REASONS = {
    REFUSAL_AGGREGATE_MISMATCH: "the aggregate is not the recombined committed blobs",
    REFUSAL_TOO_FEW_INPUTS: "fewer inputs than the key holder's minimum",
    REFUSAL_INVALID_AGGREGATE: "the aggregate is not a valid aggregate blob",
}


class ReleaseRefusedError(ProtocolAbortError):
    """The key holder refused to release a round's sum (``reason_code`` says why: one of
    ``REFUSAL_REASONS``, or 0 when the round's one release was already reserved or the
    round is not published, which is refused without any attestation)."""

    def __init__(self, message: str, *, reason_code: int) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class PrivacyEventLike(Protocol):
    """What the protocol needs of a ``dp`` privacy event."""

    @property
    def cumulative_epsilon(self) -> float: ...

    def canonical_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class Submission:
    """What a client committed in one round; ``blob`` stays private until it reveals."""

    client_id: int
    blob_digest: Digest
    event_digest: Digest
    epsilon: float
    manifest_digest: Digest
    blob: bytes = field(repr=False, default=b"")
    tx: TxResult | None = None
    signed: SignedCommit | None = None


@dataclass
class Collected:
    """Blobs the aggregator fetched for the round's commitments, and those it rejected.

    ``unrevealed`` are committed clients whose blob never reached the store (dropouts)."""

    blobs: dict[int, bytes] = field(default_factory=dict)
    commitments: dict[int, Commitment] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    unrevealed: dict[int, str] = field(default_factory=dict)


class ClientParty:
    """One hospital's side of the round protocol: commit, then (later) reveal.

    ``policy`` is the client's own privacy policy (what its trainer runs); when given, the
    client refuses to commit to a manifest that does not commit exactly that policy and
    its steps for it (:meth:`check_manifest`), so an aggregator cannot get its events
    judged against another policy."""

    def __init__(
        self, *, client_id: int, consortium: Consortium, policy: PrivacyPolicy | None = None
    ) -> None:
        self.client_id = client_id
        self.consortium = consortium
        self.policy = policy

    def check_manifest(self, round_id: int, manifest_digest: Digest) -> None:
        """Raise :class:`CommitmentMismatchError` unless the manifest (read from the store
        by the digest the client commits to) is round ``round_id``'s, lists this client at
        its own address, and commits this client's own policy and steps."""
        if self.policy is None:
            return
        try:
            manifest = RoundManifest.from_bytes(self.consortium.store.get(manifest_digest))
        except (SecAggError, OSError) as error:
            raise CommitmentMismatchError(
                f"round {round_id}: client {self.client_id} cannot read the manifest it would "
                f"commit to: {error}"
            ) from error
        address = self.consortium.address_of(self.client_id)
        member = manifest.client_by_address(address)
        if manifest.round_id != round_id or member is None:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest does not list client {self.client_id} "
                "in this round"
            )
        if member.policy != self.policy or member.expected_steps != self.policy.steps:
            raise CommitmentMismatchError(
                f"round {round_id}: the manifest does not commit client {self.client_id}'s "
                "own privacy policy; it refuses to commit"
            )

    def commit(
        self,
        round_id: int,
        session: RoundSession,
        weighted_update: np.ndarray,
        event: PrivacyEventLike | None,
        *,
        manifest_digest: Digest | None = None,
    ) -> Submission:
        """Commit phase: protect, keep the blob private, commit its digests (batched and
        merkle rounds: sign them for the aggregator).

        The commitment binds the manifest digest the client read on the ledger; a merkle
        round is not on chain yet, so its client signs ``manifest_digest`` (the digest of
        the manifest it received) and checks the opened round names it before revealing.
        The privacy event is stored now: the privacy was spent in training whether or not
        the update is accepted, and the client's next event links to this one."""
        store = self.consortium.store
        ledger = self.consortium.ledger
        if manifest_digest is None:
            manifest_digest = Digest(ledger.round_info(round_id).config_digest)
        if event is not None:  # spent in training, whatever happens next: the chain stays whole
            store.put(event.canonical_bytes())
        self.check_manifest(round_id, manifest_digest)
        if event is None:
            event_digest, epsilon = ZERO_DIGEST, 0.0
        else:
            event_digest, epsilon = store.put(event.canonical_bytes()), event.cumulative_epsilon
        blob = session.protect(self.client_id, weighted_update)
        blob_digest = keccak256(blob)
        account = self.consortium.account_of(self.client_id)
        submission = Submission(
            self.client_id, blob_digest, event_digest, epsilon, manifest_digest, blob
        )
        if self.consortium.signs_commits:
            signed = ledger.sign_commit(
                account,
                round_id=round_id,
                manifest_digest=manifest_digest,
                blob_digest=blob_digest,
                event_digest=event_digest,
                epsilon=epsilon,
            )
            return dataclasses.replace(submission, signed=signed)
        return dataclasses.replace(submission, tx=self.commit_directly(round_id, submission))

    def commit_directly(self, round_id: int, submission: Submission) -> TxResult:
        """Send the commitment in the client's own transaction (direct rounds; in batched
        rounds the fallback when the aggregator's batch left it out)."""
        return self.consortium.ledger.commit(
            round_id,
            manifest_digest=submission.manifest_digest,
            blob_digest=submission.blob_digest,
            event_digest=submission.event_digest,
            epsilon=submission.epsilon,
            sender=self.consortium.account_of(self.client_id),
        )

    def reveal(
        self, round_id: int, submission: Submission, *, on_chain: bool | None = None
    ) -> TxResult | None:
        """Reveal phase: put the blob in the store, and record the reveal on chain (direct
        rounds always; batched rounds only with ``on_chain=True``, the fallback of a client
        that fears being left out, since publication marks participants revealed).

        Refuses while the commit phase is open: before that, anyone reading the store
        could still commit a blob built from this one (its negation, or a copy)."""
        ledger = self.consortium.ledger
        info = ledger.round_info(round_id)
        if not info.commit_phase_closed(ledger.block_number()):
            raise ProtocolAbortError(
                f"round {round_id}: the commit phase is still open; the blob stays private"
            )
        if info.merkle:
            self.check_root(round_id, submission, info=info)
        self.consortium.store.put(submission.blob)
        if on_chain is None:
            on_chain = info.mode == "direct"
        if not on_chain:
            return None
        return ledger.reveal(round_id, sender=self.consortium.account_of(self.client_id))

    def check_root(
        self, round_id: int, submission: Submission, *, info: RoundInfo | None = None
    ) -> TxResult | None:
        """Merkle rounds: check this client's inclusion proof against the root on chain;
        when its signed leaf is missing, prove the omission on chain (the aggregator is
        flagged and this client counts as done). Returns the challenge's transaction."""
        if submission.signed is None:
            raise ProtocolAbortError(f"round {round_id}: a merkle client signs its leaf")
        consortium = self.consortium
        ledger, store = consortium.ledger, consortium.store
        info = info or ledger.round_info(round_id)
        if info.config_digest != submission.manifest_digest:
            raise ProtocolAbortError(
                f"round {round_id}: the round on chain names another manifest than the one "
                "this client signed; the blob stays private"
            )
        inclusion = check_inclusion(ledger, store, round_id, submission.signed, info=info)
        if inclusion.included:
            return None
        return ledger.challenge_omission(
            round_id,
            leaf=submission.signed,
            at_index=inclusion.at_index,
            proof=inclusion.proof,
            sender=consortium.account_of(self.client_id),
        )


class AggregatorParty:
    """Opens rounds, combines blindly, publishes, finalizes; never decrypts."""

    def __init__(self, *, consortium: Consortium) -> None:
        self.consortium = consortium
        self._unsettled: list[int] = []
        self._drafts: dict[int, MerkleDraft] = {}

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

    def open_round(self, manifest: RoundManifest) -> TxResult | None:
        """Store the manifest and open the round with its digest as the config digest: the
        commit phase lasts ``deadline_blocks``, and the reveal phase as many blocks more.

        Merkle rounds open later, with their root (:meth:`submit_root`): here the manifest
        is stored and the round drafted (its clients sign against it); returns None."""
        ledger = self.consortium.ledger
        config_digest = self.consortium.store.put(manifest.canonical_bytes())
        self.settle_due()
        if self.consortium.commit_mode == "merkle":
            clients = sorted((c.address for c in manifest.clients), key=lambda a: int(a, 16))
            self._drafts[manifest.round_id] = MerkleDraft(
                round_id=manifest.round_id,
                config_digest=LedgerDigest(bytes(config_digest)),
                clients=tuple(Address(to_checksum_address(a)) for a in clients),
                epsilon_budget_fixed=ledger.epsilon_budget_fixed(),
            )
            return None
        deadline = ledger.block_number() + self.consortium.deadline_blocks
        return ledger.open_round(
            manifest.round_id,
            config_digest=config_digest,
            clients=[c.address for c in manifest.clients],
            deadline=deadline,
            reveal_deadline=deadline + self.consortium.deadline_blocks,
            commit_mode=self.consortium.commit_mode,
            challenge_window=self.consortium.challenge_window,
            sender=self._account,
        )

    def draft(self, round_id: int) -> MerkleDraft:
        """Merkle rounds: the round as drafted at :meth:`open_round` (not on chain yet)."""
        draft = self._drafts.get(round_id)
        if draft is None:
            raise ProtocolAbortError(f"round {round_id}: no merkle round drafted")
        return draft

    def submit_root(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        """Merkle rounds: store the leaf set of every acceptable signed commitment and open
        the round with its root (one transaction; with no acceptable leaf the root is the
        empty tree's, so a left-out client can still prove its omission). Refused rows
        (see :func:`build_leaf_set`) are returned as ``{client address: reason}``; a
        refused client can prove an omission only if its leaf was acceptable."""
        leaf_set, refused = build_leaf_set(self.consortium.ledger, self.draft(round_id), signed)
        leaves_digest = self.consortium.store.put(leaf_set.canonical_bytes())
        return self.open_with_root(round_id, leaf_set, leaves_digest=leaves_digest), refused

    def open_with_root(self, round_id: int, leaf_set: LeafSet, *, leaves_digest: bytes) -> TxResult:
        """Merkle rounds: open the drafted round with the root of ``leaf_set``: reveals for
        ``deadline_blocks`` blocks, then the challenge window."""
        ledger = self.consortium.ledger
        tx = ledger.open_merkle_round(
            leaf_set,
            config_digest=self.draft(round_id).config_digest,
            leaves_digest=leaves_digest,
            reveal_deadline=ledger.block_number() + self.consortium.deadline_blocks,
            challenge_window=self.consortium.challenge_window,
            sender=self._account,
        )
        self._drafts.pop(round_id, None)
        return tx

    def settle_due(self) -> list[TxResult]:
        """Settle the reputation of every merkle round this aggregator published whose
        challenge window has passed (lazy: it runs before the next round opens); rounds
        due together with the same selected list are settled in one transaction."""
        ledger = self.consortium.ledger
        due = []
        for round_id in list(self._unsettled):
            info = ledger.round_info(round_id)
            if info.finalized:
                self._unsettled.remove(round_id)
            elif (info.challenge_deadline or 0) < ledger.block_number():
                due.append(round_id)
        if not due:
            return []
        settled = ledger.settle_reputations(due, sender=self._account)
        for round_id in due:
            self._unsettled.remove(round_id)
        return settled

    def submit_batch(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        """Batched rounds: put the clients' signed commitments on chain in one transaction.

        The contract reverts a whole batch for one bad row, so rows it would refuse (a
        claim over the round's budget, a signature over another manifest, a client that
        already committed by itself) are left out first and returned as
        ``{client address: reason}``; the others still commit."""
        ledger = self.consortium.ledger
        info = ledger.round_info(round_id)
        budget = info.epsilon_budget_fixed
        already = {c.client.lower() for c in ledger.commitments(round_id)}
        refused: dict[str, str] = {}
        for c in signed:
            if c.epsilon_fixed > budget:
                refused[str(c.client)] = (
                    f"claimed epsilon {c.epsilon_fixed / EPSILON_SCALE:.6f} over the budget"
                )
            elif c.manifest_digest != info.config_digest:
                refused[str(c.client)] = "signed another manifest than the round's"
            elif c.client.lower() in already:
                refused[str(c.client)] = "already committed"
        accepted = [c for c in signed if c.client not in refused]
        if not accepted:
            return None, refused
        tx = self.consortium.ledger.commit_batch(round_id, accepted, sender=self._account)
        return tx, refused

    def manifest(self, round_id: int) -> RoundManifest:
        """The round's manifest, fetched by the config digest on the ledger and checked."""
        info = self.consortium.ledger.round_info(round_id)
        return RoundManifest.from_bytes(self.consortium.store.get(info.config_digest))

    def close_commit_phase(self, round_id: int) -> None:
        """Wait (in simulation: mine) until no client can commit any more."""
        ledger = self.consortium.ledger
        info = ledger.round_info(round_id)
        if not info.commit_phase_closed(ledger.block_number()):
            ledger.advance_past(info.deadline)

    def collect(self, round_id: int, manifest: RoundManifest) -> Collected:
        """Fetch every committed blob from the store (only commitments count: a blob whose
        digest was not committed is never looked at). A committed blob not in the store
        is a client that did not reveal; an altered one is rejected."""
        collected = Collected()
        owner: dict[bytes, int] = {}  # blob digest -> the client that committed it first
        consortium = self.consortium
        randomized = scheme_class(manifest.scheme).randomized_blobs
        for commitment in round_commitments(consortium.ledger, consortium.store, round_id):
            member = manifest.client_by_address(commitment.client)
            if member is None:  # the contract only accepts selected clients
                continue
            client_id = member.client_id
            if client_id in collected.commitments:
                continue  # one commitment per client and round; never count a client twice
            collected.commitments[client_id] = commitment
            first = owner.setdefault(bytes(commitment.blob_digest), client_id)
            if first != client_id and randomized:
                # Randomized schemes never give two honest clients the same blob: a later
                # commitment of a digest already committed is a copied commitment (commit
                # order decides). Under plain, equal updates give equal blobs.
                collected.rejected[client_id] = f"copies the commitment of client {first}"
                continue
            try:
                collected.blobs[client_id] = self.consortium.store.get(commitment.blob_digest)
            except ArtifactNotFoundError:
                collected.unrevealed[client_id] = "committed but did not reveal its blob"
            except CommitmentMismatchError as error:
                collected.rejected[client_id] = f"{type(error).__name__}: {error}"
        return collected

    def combine_and_publish(
        self, round_id: int, session: RoundSession, collected: Collected
    ) -> tuple[bytes, TxResult]:
        """Combine the valid blobs, store the aggregate, publish its digest and participants.

        A round whose participants are not every committed client is published only after
        the reveal deadline (the contract refuses earlier), so a late reveal still counts."""
        aggregate, aggregate_digest, merkle = self._combine(round_id, session, collected)
        ledger = self.consortium.ledger
        publish = ledger.publish_merkle if merkle else ledger.publish_aggregate
        tx = publish(
            round_id,
            aggregate_digest=aggregate_digest,
            participants=self.consortium.addresses_of(session.combined),
            sender=self._account,
        )
        return aggregate, tx

    def combine_and_sign(
        self, round_id: int, session: RoundSession, collected: Collected
    ) -> tuple[bytes, SignedPublication]:
        """Merkle rounds released by a key holder: combine and store as
        :meth:`combine_and_publish`, but sign the publication instead of sending it; the
        key holder sends it with its reservation (one transaction for both)."""
        aggregate, aggregate_digest, _ = self._combine(round_id, session, collected)
        publication = self.consortium.ledger.sign_publication(
            round_id,
            aggregate_digest=aggregate_digest,
            participants=self.consortium.addresses_of(session.combined),
            account=self._account,
        )
        return aggregate, publication

    def _combine(
        self, round_id: int, session: RoundSession, collected: Collected
    ) -> tuple[bytes, Digest, bool]:
        """Combine and store the aggregate; wait past the reveal deadline unless every
        committed client is in it. Returns the aggregate, its digest, whether merkle."""
        aggregate = session.combine(collected.blobs)
        for client_id in collected.blobs:
            if client_id not in session.combined:
                collected.rejected.setdefault(client_id, "rejected by the scheme's combine")
        aggregate_digest = self.consortium.store.put(aggregate)
        ledger = self.consortium.ledger
        info = ledger.round_info(round_id)
        if len(session.combined) != info.commits:
            ledger.advance_past(info.reveal_deadline)
        return aggregate, aggregate_digest, info.merkle

    def finalize(self, round_id: int) -> TxResult | None:
        """Finalize (reputation). Merkle rounds only after their challenge window: the
        round is queued and settled by :meth:`settle_due` (returns None)."""
        if self.consortium.commit_mode == "merkle":
            self._unsettled.append(round_id)
            return None
        return self.consortium.ledger.finalize(round_id, sender=self._account)


def participant_blobs(
    ledger: Ledger,
    store: ArtifactStore,
    round_id: int,
    manifest: RoundManifest,
    aggregate: bytes,
    *,
    publication: SignedPublication | None = None,
) -> list[tuple[int, bytes]]:
    """``(client id, committed blob)`` of every participant, in participant order, after
    checking that ``aggregate`` is the published one under the round's manifest (or, for a
    merkle round not yet published, the one of the aggregator's signed ``publication``).
    Raises :class:`~secagg._errors.CommitmentMismatchError`."""
    info = ledger.round_info(round_id)
    digest = keccak256(aggregate)
    participants = info.participants
    published = info.aggregate_digest
    if publication is not None:
        published = publication.aggregate_digest
        words = publication.participant_words
        if publication.round_id != round_id or len(words) != (len(info.clients) + 255) // 256:
            raise CommitmentMismatchError(f"round {round_id}: not this round's publication")
        participants = tuple(
            c for i, c in enumerate(info.clients) if (words[i // 256] >> (i % 256)) & 1
        )
    if published != digest:
        raise CommitmentMismatchError(
            f"round {round_id}: aggregate digest {digest.hex()} is not the published one"
        )
    if info.config_digest != manifest.digest():
        raise CommitmentMismatchError(f"round {round_id}: not the round's manifest")
    committed = {
        c.client.lower(): c.blob_digest for c in round_commitments(ledger, store, round_id)
    }
    blobs = []
    for participant in participants or ():
        member = manifest.client_by_address(participant)
        blob_digest = committed.get(participant.lower())
        if member is None or blob_digest is None:
            raise CommitmentMismatchError(
                f"round {round_id}: participant {participant} has no commitment"
            )
        try:
            blobs.append((member.client_id, store.get(blob_digest)))
        except (ArtifactNotFoundError, CommitmentMismatchError) as error:
            raise CommitmentMismatchError(
                f"round {round_id}: participant {participant}'s committed blob: {error}"
            ) from error
    return blobs


def check_aggregate(
    ledger: Ledger,
    store: ArtifactStore,
    round_id: int,
    manifest: RoundManifest,
    aggregate: bytes,
    *,
    publication: SignedPublication | None = None,
) -> None:
    """Refuse an aggregate unless it is byte for byte the recombination of the round's
    participants' committed blobs, and its digest is the one published on the ledger.

    The check a key holder (or each member of a decryption committee) runs before it
    releases anything: it fetches every participant's committed blob from the store,
    recombines them with the public parameters of the manifest and compares bytes, so an
    aggregator that publishes, say, one client's ciphertext under an honest header is refused
    before any decryption. ``publication``: a merkle round's signed publication, not yet
    on chain (the key holder sends it with its reservation). Raises
    :class:`~secagg._errors.CommitmentMismatchError`.
    """
    in_order = participant_blobs(
        ledger, store, round_id, manifest, aggregate, publication=publication
    )
    blobs = sorted(in_order)
    try:
        recombined = recombine(manifest, blobs, store)
    except (SecAggError, ValueError) as error:
        raise CommitmentMismatchError(
            f"round {round_id}: the participants' committed blobs do not recombine: {error}"
        ) from error
    if recombined != aggregate:
        raise CommitmentMismatchError(
            f"round {round_id}: the aggregate is not the sum of the participants' committed blobs"
        )
    inputs = aggregate_inputs(manifest, aggregate)
    # The aggregator adds blobs in client id order (the ledger lists participants by
    # address, which is the same order only when ids ascend with addresses).
    expected = tuple(keccak256(blob) for _, blob in blobs)  # the store checked each digest
    if inputs is not None and tuple(inputs) != expected:
        raise CommitmentMismatchError(
            f"round {round_id}: the aggregate's inputs are not the participants' commitments"
        )


def refusal_code(error: Exception) -> int:
    """The reason code a releasing party attests when it refuses because of ``error``."""
    if isinstance(error, CommitmentMismatchError):
        return REFUSAL_AGGREGATE_MISMATCH
    if isinstance(error, InsufficientClientsError):
        return REFUSAL_TOO_FEW_INPUTS
    return REFUSAL_INVALID_AGGREGATE


class KeyHolderParty:
    """Releases a round's sum at most once, and only for the recombined committed blobs."""

    def __init__(self, *, consortium: Consortium, attests: bool) -> None:
        self.consortium = consortium
        self.attests = attests

    def check_aggregate(
        self,
        round_id: int,
        manifest: RoundManifest,
        aggregate: bytes,
        *,
        publication: SignedPublication | None = None,
    ) -> None:
        """:func:`check_aggregate` against this consortium's ledger and store."""
        consortium = self.consortium
        check_aggregate(
            consortium.ledger,
            consortium.store,
            round_id,
            manifest,
            aggregate,
            publication=publication,
        )

    def reveal(
        self,
        round_id: int,
        manifest: RoundManifest,
        session: RoundSession,
        aggregate: bytes,
        *,
        survivors: Collection[int],
        noise_std: float | None = None,
        publication: SignedPublication | None = None,
    ) -> tuple[np.ndarray, TxResult | None]:
        """Check, reserve, release the sum, store it and (CKKS) attest its digest.

        With a key holder (``attests``) the order is: recombine-and-compare, reserve the
        release on the ledger (only a published, unreserved round can be reserved, so a
        second request is refused here), decrypt, store, attest. A refusal is attested on
        chain with its reason code and raised as :class:`ReleaseRefusedError`.

        Merkle rounds come with the aggregator's signed ``publication`` (not yet on
        chain): the reservation publishes it in the same transaction (only an unpublished
        round can be, so a second request is refused the same way); a refusal first puts
        the aggregator's signed publication on chain, then attests the refusal.

        ``noise_std`` is the release hook of central DP (``dp=client``): Gaussian noise of
        that std per coordinate, from a ChaCha20 keystream (:class:`dp.SecureGaussian`), is
        added to the sum right after decryption, inside the release: only the noised sum is
        stored, attested and returned; the exact sum never leaves this method."""
        if noise_std is not None and not (
            isinstance(noise_std, int | float) and math.isfinite(noise_std) and noise_std > 0
        ):
            raise InvalidUpdateError(f"release noise std must be finite and > 0: {noise_std!r}")
        ledger = self.consortium.ledger
        account = self.consortium.parties.key_holder
        if self.attests:
            status = ledger.round_info(round_id).status
            expected = RoundStatus.AGGREGATED if publication is None else RoundStatus.OPEN
            if status is not expected:
                raise ReleaseRefusedError(
                    f"round {round_id}: release already reserved or round not published "
                    f"({status.name})",
                    reason_code=0,
                )
        reserved = False
        try:
            self.check_aggregate(round_id, manifest, aggregate, publication=publication)
            if self.attests:
                if publication is None:
                    ledger.reserve_release(round_id, sender=account)
                else:
                    ledger.publish_and_reserve(publication, sender=account)
                reserved = True
            total = session.reveal(aggregate, survivors=survivors)
        except SecAggError as error:
            code = refusal_code(error)
            if self.attests:
                # If even the attestation fails, the refusal stands: nothing was released.
                with contextlib.suppress(ChainError):
                    if publication is not None and not reserved:
                        # record what the aggregator signed, then refuse it
                        ledger.publish_and_reserve(publication, sender=account)
                    ledger.attest_refusal(round_id, reason_code=code, sender=account)
            raise ReleaseRefusedError(
                f"round {round_id}: release refused ({REFUSAL_REASONS[code]}): {error}",
                reason_code=code,
            ) from error
        if noise_std is not None:
            exact = np.asarray(total, dtype=np.float64)
            total = exact + SecureGaussian().normal(float(noise_std), exact.shape)
            del exact
        reveal_digest = self.consortium.store.put(np.asarray(total, dtype="<f8").tobytes())
        tx = None
        if self.attests:
            tx = ledger.attest_reveal(round_id, reveal_digest=reveal_digest, sender=account)
        return total, tx


__all__ = [
    "REFUSAL_AGGREGATE_MISMATCH",
    "REFUSAL_INVALID_AGGREGATE",
    "REFUSAL_REASONS",
    "REFUSAL_TOO_FEW_INPUTS",
    "ZERO_DIGEST",
    "AggregatorParty",
    "ClientParty",
    "Collected",
    "KeyHolderParty",
    "ReleaseRefusedError",
    "Submission",
    "check_aggregate",
]
