"""Committee decryption in the round: K members, any T of them release a round's sum.

With ``secagg.committee_size`` K > 1 there is no key holder. :func:`form_committee` gives
each member its own ledger account with the committee role; the admin sets the committee
up on chain, which fixes the seed of the common random polynomial from the chain (no member
chooses it); each member commits its public key share's digest and stores the share; for
T < K the members exchange Shamir shares of their secrets (in this one-process simulation
by direct hand-over, standing for an authenticated encrypted channel; they never touch the
store or the ledger); each member then joins with the shares fetched from the store by
their committed digests, and the collective public context is what clients encrypt under.

A round's release (:meth:`DecryptionCommittee.reveal`), in place of the key holder's:

1. each present member independently fetches the participants' committed blobs, recombines
   them and compares the published aggregate byte for byte
   (:meth:`CommitteeMemberParty.check`); a mismatch is refused and the refusal attested;
2. the first member reserves the round's one release on the ledger; each member then
   stores its partial decryption and attests its digest (:meth:`CommitteeMemberParty.partial`);
3. the combiner (the lowest present member) fetches the attested partials and runs
   :func:`~secagg.ckks.combine_partials`. A partial shown wrong by the cross-check
   (``PartialMismatchError.culprits``, possible with T + 2 or more partials) is dropped and
   the rest combined again; with fewer than T usable partials nothing is released and the
   refusal is attested (:data:`REFUSAL_TOO_FEW_PARTIALS`, :data:`REFUSAL_BAD_PARTIALS`);
4. the combiner stores the sum and attests its digest.

What the cross-check proves is stated in :mod:`secagg.ckks._committee`: with one wrong
partial among at least T + 2 (and the lowest T honest), that member is named; with T + 1
a wrong partial is detected but not attributed; with exactly T only the range check of the
release applies. The auditor (:mod:`secagg._auditor`) repeats the combination from the
stored attested partials, so the named member is named again after the fact.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import ChainError, CommitteeInfo, Ledger, Role, RoundStatus, TxResult
from secagg._consortium import Consortium
from secagg._digest import Digest
from secagg._errors import (
    CommitmentMismatchError,
    ProtocolAbortError,
    SecAggError,
)
from secagg._manifest import RoundManifest
from secagg._roles import (
    ReleaseRefusedError,
    participant_blobs,
    refusal_code,
)
from secagg._scheme import ProtectionScheme, RoundSession
from secagg._store import ArtifactNotFoundError, ArtifactStore
from secagg.ckks import (
    CKKSScheme,
    CommitteeMember,
    CommitteeParams,
    InsufficientPartialsError,
    PartialMismatchError,
    RevealPolicy,
    combine_partials,
)

# A member sends a few transactions a round (well under 1e6 gas); 10 ether lasts for ever on
# a dev chain and leaves anvil's faucet (10,000 ether) room after the other parties' funding.
MEMBER_FUNDING_WEI = 10**19

# Refusal codes of a committee (after the key holder's 1-3).
REFUSAL_TOO_FEW_PARTIALS = 4
REFUSAL_BAD_PARTIALS = 5
COMMITTEE_REFUSAL_REASONS = {
    REFUSAL_TOO_FEW_PARTIALS: "fewer than T committee members published a partial",
    REFUSAL_BAD_PARTIALS: "the published partials are inconsistent and cannot be attributed",
}


@dataclass
class MemberRoundStats:
    """One member's work in one round: seconds computing (recombining the committed blobs
    to check the aggregate, and its partial decryption; ledger calls not included, they are
    in the round's chain seconds), bytes it fetched and bytes it published."""

    seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


@dataclass
class CommitteeRoundResult:
    """What a committee release produced: which members took part, who was named."""

    members: tuple[int, ...] = ()
    named: dict[int, str] = field(default_factory=dict)
    stats: dict[int, MemberRoundStats] = field(default_factory=dict)
    combine_seconds: float = 0.0


def committee_participant_blobs(
    consortium: Consortium, round_id: int, manifest: RoundManifest, aggregate: bytes
) -> list[bytes]:
    """The round's participants' committed blobs (in participant order), after checking
    that ``aggregate`` is the published one under the round's manifest."""
    blobs = participant_blobs(consortium.ledger, consortium.store, round_id, manifest, aggregate)
    return [blob for _, blob in sorted(blobs)]


class CommitteeMemberParty:
    """One committee member: its ledger account and its key share (in memory only)."""

    def __init__(
        self, *, consortium: Consortium, account: LocalAccount, member: CommitteeMember
    ) -> None:
        self.consortium = consortium
        self.account = account
        self.member = member
        self.partial_seconds = 0.0

    @property
    def index(self) -> int:
        return self.member.member

    def check(self, round_id: int, manifest: RoundManifest, aggregate: bytes) -> int:
        """Recombine the committed blobs itself and compare (raises on a mismatch);
        returns the bytes it fetched."""
        blobs = committee_participant_blobs(self.consortium, round_id, manifest, aggregate)
        self.member.verify_aggregate(aggregate, committed_blobs=blobs)
        return sum(len(blob) for blob in blobs)

    def reserve(self, round_id: int) -> TxResult | None:
        """Reserve the round's one release unless another member already did."""
        ledger = self.consortium.ledger
        if ledger.round_info(round_id).status is RoundStatus.AGGREGATED:
            return ledger.reserve_release(round_id, sender=self.account)
        return None

    def partial(self, round_id: int, aggregate: bytes) -> bytes:
        """Store this member's partial decryption (of a checked aggregate), attest its digest."""
        ledger = self.consortium.ledger
        if ledger.round_info(round_id).status is not RoundStatus.RELEASING:
            raise ReleaseRefusedError(
                f"round {round_id}: no reserved release, member {self.index} publishes nothing",
                reason_code=0,
            )
        start = time.perf_counter()
        partial = self.member.partial_decrypt(aggregate)
        self.partial_seconds = time.perf_counter() - start
        digest = self.consortium.store.put(partial)
        ledger.attest_partial(round_id, partial_digest=digest, sender=self.account)
        return partial

    def refuse(self, round_id: int, code: int) -> None:
        """Attest a refusal (if even that fails, the refusal stands: nothing released)."""
        try:
            self.consortium.ledger.attest_refusal(round_id, reason_code=code, sender=self.account)
        except ChainError:
            return


class DecryptionCommittee:
    """The K members of a round's decryption committee and the combiner's part."""

    def __init__(
        self,
        *,
        consortium: Consortium,
        scheme: CKKSScheme,
        members: Sequence[CommitteeMemberParty],
        info: CommitteeInfo,
    ) -> None:
        self.consortium = consortium
        self.scheme = scheme
        self.members = list(members)
        self.info = info

    @property
    def params(self) -> CommitteeParams:
        return self.scheme.committee

    def reveal(
        self,
        round_id: int,
        manifest: RoundManifest,
        session: RoundSession,
        aggregate: bytes,
        *,
        absent: Collection[int] = (),
    ) -> tuple[np.ndarray, CommitteeRoundResult]:
        """Release the round's sum with the members not in ``absent`` (member indices).

        Raises :class:`ReleaseRefusedError` (nothing released) when the aggregate is not
        the recombined committed blobs, or fewer than T consistent partials exist."""
        ledger = self.consortium.ledger
        result = CommitteeRoundResult()
        present = [m for m in self.members if m.index not in set(absent)]
        status = ledger.round_info(round_id).status
        if status is not RoundStatus.AGGREGATED:
            raise ReleaseRefusedError(
                f"round {round_id}: release already reserved or round not published "
                f"({status.name})",
                reason_code=0,
            )
        partials: list[bytes] = []
        for party in present:
            stats = result.stats.setdefault(party.index, MemberRoundStats())
            start = time.perf_counter()
            try:
                stats.bytes_down += party.check(round_id, manifest, aggregate) + len(aggregate)
                stats.seconds += time.perf_counter() - start
                party.reserve(round_id)
                partial = party.partial(round_id, aggregate)
                stats.seconds += party.partial_seconds
            except ReleaseRefusedError:
                raise
            except (SecAggError, ChainError) as error:
                code = refusal_code(error)
                party.refuse(round_id, code)
                raise ReleaseRefusedError(
                    f"round {round_id}: committee member {party.index} refused: {error}",
                    reason_code=code,
                ) from error
            stats.bytes_up += len(partial)
            partials.append(partial)
        start = time.perf_counter()
        try:
            total, result.members, result.named = self._combine(round_id, aggregate)
        except (InsufficientPartialsError, PartialMismatchError) as error:
            code = (
                REFUSAL_TOO_FEW_PARTIALS
                if isinstance(error, InsufficientPartialsError)
                else REFUSAL_BAD_PARTIALS
            )
            if present:
                present[0].refuse(round_id, code)
            raise ReleaseRefusedError(
                f"round {round_id}: committee release refused "
                f"({COMMITTEE_REFUSAL_REASONS[code]}): {error}",
                reason_code=code,
            ) from error
        result.combine_seconds = time.perf_counter() - start
        reveal_digest = self.consortium.store.put(np.asarray(total, dtype="<f8").tobytes())
        ledger.attest_reveal(round_id, reveal_digest=reveal_digest, sender=present[0].account)
        session.stats.seconds["reveal"] += result.combine_seconds + sum(
            s.seconds for s in result.stats.values()
        )
        session.stats.bytes_up["reveal"] += sum(s.bytes_up for s in result.stats.values())
        session.stats.bytes_down["reveal"] += sum(s.bytes_down for s in result.stats.values())
        return total, result

    def _combine(
        self, round_id: int, aggregate: bytes
    ) -> tuple[np.ndarray, tuple[int, ...], dict[int, str]]:
        """Combine the attested partials, dropping members the cross-check names."""
        return combine_attested(
            aggregate,
            attested_partials(self.consortium.ledger, self.consortium.store, round_id),
            public_context=self.scheme.public_context or b"",
            committee=self.params,
            policy=self.scheme.policy,
        )


def attested_partials(ledger: Ledger, store: ArtifactStore, round_id: int) -> dict[int, bytes]:
    """Member index -> its partial of ``round_id``, fetched by the attested digest (a
    partial missing from the store is left out: that member counts as absent)."""
    out = {}
    for index, digest in ledger.partial_attestations(round_id).items():
        try:
            out[index] = store.get(digest)
        except (ArtifactNotFoundError, CommitmentMismatchError):
            continue
    return out


def combine_attested(
    aggregate: bytes,
    partials: Mapping[int, bytes],
    *,
    public_context: bytes,
    committee: CommitteeParams,
    policy: RevealPolicy,
) -> tuple[np.ndarray, tuple[int, ...], dict[int, str]]:
    """:func:`~secagg.ckks.combine_partials` over ``partials`` (member -> bytes), dropping
    each member the cross-check names and combining again; returns the released values,
    the members whose partials produced them and the named members (-> why). Raises
    :class:`~secagg.ckks.InsufficientPartialsError` or
    :class:`~secagg.ckks.PartialMismatchError` when nothing can be released. Deterministic:
    the protocol's combiner and the auditor get the same bytes from the same partials."""
    named: dict[int, str] = {}
    while True:
        try:
            release = combine_partials(
                aggregate,
                [p for j, p in sorted(partials.items()) if j not in named],
                public_context=public_context,
                committee=committee,
                policy=policy,
            )
        except PartialMismatchError as error:
            fresh = [j for j in error.culprits if j not in named]
            if not fresh:
                raise
            named.update({j: str(error) for j in fresh})
            continue
        return release.values, release.members, named


def form_committee(consortium: Consortium, scheme: ProtectionScheme) -> DecryptionCommittee:
    """Create the members' accounts, set the committee up on chain, run the collective key
    generation and install the collective public context in ``scheme`` (a scheme that
    :meth:`~secagg._scheme.ProtectionScheme.decrypts_by_committee`: CKKS)."""
    if not isinstance(scheme, CKKSScheme):
        raise ProtocolAbortError(f"secagg={scheme.name} has no decryption committee")
    params = scheme.committee
    ledger, store, admin = consortium.ledger, consortium.store, consortium.parties.admin
    accounts = [Account.create() for _ in params.members]
    ledger.fund([a.address for a in accounts], MEMBER_FUNDING_WEI)
    ledger.register(Role.COMMITTEE, [a.address for a in accounts], sender=admin)
    ledger.setup_committee([a.address for a in accounts], threshold=params.threshold, sender=admin)
    info = ledger.committee()
    assert info is not None  # just set up
    members = [
        CommitteeMemberParty(
            consortium=consortium,
            account=account,
            member=CommitteeMember(
                member=index,
                params=scheme.params,
                committee=params,
                policy=scheme.policy,
                crp_seed=bytes(info.seed),
            ),
        )
        for index, account in zip(params.members, accounts, strict=True)
    ]
    for party in members:
        digest = store.put(party.member.public_key_share)
        ledger.commit_key_share(digest, sender=party.account)
    for dealer in members:  # stands for an authenticated encrypted channel per pair
        for recipient, message in dealer.member.deal_secret_shares().items():
            members[recipient - 1].member.receive_secret_share(sender=dealer.index, message=message)
    info = ledger.committee()
    assert info is not None
    digests = [info.share_digests[j] for j in params.members]
    shares = [store.get(digest) for digest in digests]
    contexts = {
        party.member.join(shares, share_digests=[Digest(d) for d in digests]).to_bytes()
        for party in members
    }
    if len(contexts) != 1:
        raise CommitmentMismatchError("committee members derived different collective keys")
    scheme.install_public_context(contexts.pop())
    return DecryptionCommittee(consortium=consortium, scheme=scheme, members=members, info=info)


__all__ = [
    "COMMITTEE_REFUSAL_REASONS",
    "REFUSAL_BAD_PARTIALS",
    "REFUSAL_TOO_FEW_PARTIALS",
    "CommitteeMemberParty",
    "CommitteeRoundResult",
    "DecryptionCommittee",
    "MemberRoundStats",
    "attested_partials",
    "combine_attested",
    "committee_participant_blobs",
    "form_committee",
]
