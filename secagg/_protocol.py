"""The privacy-hardened round, end to end (docs/architecture.md, "A round").

:class:`SecureRoundProtocol` drives the parties of :mod:`secagg._roles` through one round
over a :class:`~secagg._consortium.Consortium` (ledger + artifact store):

1. the aggregator stores the round manifest and opens the round on the ledger with its
   digest, a commit deadline and a reveal deadline (the selected clients were filtered by
   on-chain reputation);
2. **commit phase**: each client that is still up protects its weighted update, stores its
   privacy event, keeps the blob private and commits the digests, its claimed cumulative
   epsilon and the manifest digest (batched rounds: signs, the aggregator submits every
   signature in one transaction, and a client left out of the batch commits itself;
   merkle rounds: signs a leaf for the manifest before the round is on chain, the
   aggregator stores the leaf set and opens the round with its root in one transaction,
   and each client checks the opened round's manifest digest and its inclusion proof
   before it reveals, proving an omission on chain);
3. the commit phase closes at its deadline, or as soon as every selected client committed;
4. **reveal phase**: each committed client puts its blob in the store and (direct rounds)
   records its reveal; a committed client that does not reveal is a dropout;
5. the aggregator reads the commitments from the ledger, fetches each revealed blob by its
   committed digest, combines blindly and publishes the aggregate digest and the
   participants (before the reveal deadline only if all committed clients are in it);
6. the key holder (CKKS) recombines the committed blobs itself, compares bytes, reserves
   the release on the ledger (merkle rounds: in the same transaction as the aggregator's
   signed publication), decrypts once and attests (or attests its refusal); with a
   decryption committee (K > 1, :mod:`secagg._committee_round`) each present member does
   the check itself, the first reserves, each attests its partial, and any T partials
   release the sum (fewer: the round aborts, nothing released); for
   masking the unmasking server releases the sum; the aggregator finalizes (reputation:
   +1 committed and revealed, -1 otherwise; merkle rounds settle it lazily, once their
   challenge window has passed, before the aggregator opens a later round);
7. the auditor checks the round from ledger and store alone and flags every client at fault
   (lowering its reputation, which later selection uses); faults of the aggregator or the
   key holder are named in its findings.

A client that crashes before committing is left out (CKKS, plain) or, for masking, handled
by the dropout recovery; one that commits but never reveals is left out the same way;
one that crashes after revealing stays in the sum (for masking its self mask is
reconstructed from the survivors' shares). Any one client's bad input is rejected alone
and the round carries on with the others.

Threat model of the round, per role (HbC = honest-but-curious; the aggregator and the key
holder do not collude; docs/threat-model.md has the long form):

===========  ==========================  ================================  =================
role         stopped before release      detected after (auditor names)    out of scope
===========  ==========================  ================================  =================
client       reading, cancelling or      invalid blobs, a claimed reveal   no proof of
             copying another blob        without a blob, lying privacy     plaintext
             (private until commits      events (flagged on chain)         knowledge
             close); late, double or
             wrong-manifest commits
aggregator   early publication; a        a committed, revealed, valid      leaking blobs
             payload that is not the     blob left out (client keeps its   early to a
             committed blobs' sum;       positive event); a manifest no    colluding
             censoring a signed commit   blob fits (no client flagged)     client
key holder   a second release; fresh     a reservation never attested; a   the decryption
             noise per repeat (PRF)      refusal whose reason is false     is not proven
ledger       enforces roles, phases,     (trusted for integrity)           consensus and
             deadlines, budgets                                            contract trusted
auditor      (after the fact only)       re-derives everything public      cannot undo a
                                                                           release
===========  ==========================  ================================  =================

Residual risks: an aggregator (or store operator) that leaks blobs before the commit phase
closes lets a colluding client cancel or copy one; a client can commit any valid
ciphertext of its own; sample-level DP still bounds what any isolated update reveals.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from chain import AlreadyFlagged, ChainError
from secagg._audit_report import Finding
from secagg._auditor import DEFAULT_EPSILON_TOLERANCE, Auditor, culprits
from secagg._committee_round import DecryptionCommittee, form_committee
from secagg._consortium import Consortium
from secagg._digest import Digest, keccak256
from secagg._errors import InvalidUpdateError, ProtocolAbortError, SecAggError
from secagg._manifest import ManifestClient, PrivacyPolicy, RoundManifest
from secagg._roles import (
    AggregatorParty,
    ClientParty,
    KeyHolderParty,
    PrivacyEventLike,
    Submission,
)
from secagg._scheme import PhaseStats, ProtectionScheme, RoundSession


@dataclass(frozen=True)
class SecureRoundOutcome:
    """What one protocol round produced (the revealed *sum* of the included updates)."""

    round_id: int
    total: np.ndarray | None
    included: tuple[int, ...]
    excluded: Mapping[int, str]
    stats: PhaseStats
    gas_used: int
    chain_seconds: float
    config_digest: Digest
    aggregate_digest: bytes | None
    findings: tuple[Finding, ...] = ()
    flagged: Mapping[int, int] = field(default_factory=dict)
    gas_by_phase: Mapping[str, int] = field(default_factory=dict)
    chain_seconds_by_phase: Mapping[str, float] = field(default_factory=dict)
    committee: Mapping[int, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen all the way down: the mappings are read-only views of private copies, so
        # no reader of an outcome can change what the round produced.
        for name in ("excluded", "flagged", "gas_by_phase", "chain_seconds_by_phase"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        committee = {k: MappingProxyType(dict(v)) for k, v in self.committee.items()}
        object.__setattr__(self, "committee", MappingProxyType(committee))
        if self.total is not None:  # a read-only view (no copy of a large sum)
            total = np.asarray(self.total).view()
            total.flags.writeable = False
            object.__setattr__(self, "total", total)


log = logging.getLogger("secagg")


# Ledger functions by round phase (gas and seconds are reported per phase).
PHASE_OF_FUNCTION = {
    "openRound": "open",
    "openRoundWithRoot": "commit",  # merkle: the opening carries the commitments' root
    "reserveAndPublish": "release",  # merkle: the key holder's reservation + publication
    "proveLeafMissing": "reveal",
    "publishMerkleRound": "publish",
    "finalizeOptimisticRoundBatch": "finalize",
    "commit": "commit",
    "commitOwn": "commit",
    "commitBatch": "commit",
    "reveal": "reveal",
    "revealOwn": "reveal",
    "publishAggregate": "publish",
    "reserveRelease": "release",
    "attestReveal": "release",
    "attestRefusal": "release",
    "attestPartial": "release",
    "finalize": "finalize",
    "flag": "audit",
}
CHAIN_PHASES = ("open", "commit", "reveal", "publish", "release", "finalize", "audit")


class _ChainClock:
    """Accumulates wall seconds spent in ledger calls, in total and per phase."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.by_phase: dict[str, float] = dict.fromkeys(CHAIN_PHASES, 0.0)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds += seconds
        self.by_phase[phase] = self.by_phase.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)


class SecureRoundProtocol:
    """Runs rounds of the hardened protocol for one federation (see the module docstring)."""

    def __init__(
        self,
        *,
        consortium: Consortium,
        scheme: ProtectionScheme,
        scheme_config: Mapping[str, Any],
        dim: int,
        dp_mode: str = "off",
        audit_each_round: bool = True,
    ) -> None:
        self.consortium = consortium
        self.scheme = scheme
        self.scheme_config = dict(scheme_config)
        self.dim = dim
        self.dp_mode = dp_mode
        self.audit_each_round = audit_each_round
        self.aggregator = AggregatorParty(consortium=consortium)
        self.key_holder = KeyHolderParty(
            consortium=consortium, attests=scheme.releases_via_key_holder
        )
        self.auditor = Auditor(
            ledger=consortium.ledger,
            store=consortium.store,
            epsilon_tolerance=DEFAULT_EPSILON_TOLERANCE,
        )
        self.committee: DecryptionCommittee | None = None
        if scheme.decrypts_by_committee():
            self.committee = form_committee(consortium, scheme)
        public_material = scheme.public_material()
        self.public_material: str | None = None
        if public_material is not None:
            self.public_material = consortium.store.put(public_material).hex()

    def select(self, candidates: Collection[int]) -> list[int]:
        """The candidates whose reputation clears the consortium's threshold."""
        return self.aggregator.select(candidates)

    def manifest(
        self,
        round_id: int,
        *,
        selected: Sequence[int],
        weights: Mapping[int, float],
        expected_steps: Mapping[int, int] | None = None,
        policies: Mapping[int, PrivacyPolicy] | None = None,
        federation_policy: PrivacyPolicy | None = None,
        federation_event: str | None = None,
    ) -> RoundManifest:
        steps = expected_steps or {}
        policies = policies or {}
        return RoundManifest(
            round_id=round_id,
            scheme=self.scheme.name,
            scheme_config=self.scheme_config,
            dim=self.dim,
            clients=tuple(
                ManifestClient(
                    client_id=c,
                    address=self.consortium.address_of(c),
                    weight=float(weights[c]),
                    expected_steps=steps.get(c),
                    policy=policies.get(c),
                )
                for c in sorted(selected)
            ),
            public_material=self.public_material,
            dp_mode=self.dp_mode,
            federation_policy=federation_policy,
            federation_event=federation_event,
        )

    def run_round(
        self,
        round_id: int,
        *,
        selected: Sequence[int],
        weights: Mapping[int, float],
        updates: Mapping[int, np.ndarray],
        events: Mapping[int, PrivacyEventLike | None] | None = None,
        expected_steps: Mapping[int, int] | None = None,
        policies: Mapping[int, PrivacyPolicy] | None = None,
        client_policies: Mapping[int, PrivacyPolicy] | None = None,
        release_noise_std: float | None = None,
        federation_policy: PrivacyPolicy | None = None,
        federation_event: str | None = None,
        crash_after_commit: Collection[int] = (),
        withhold_reveal: Collection[int] = (),
        absent_members: Collection[int] = (),
    ) -> SecureRoundOutcome:
        """One round. ``updates`` holds the *weighted* updates of the clients still up (the
        others in ``selected`` dropped before committing); ``withhold_reveal`` are clients
        that commit and never reveal (dropouts); ``crash_after_commit`` are clients that
        commit and reveal, and then go silent (they do not answer the unmask stage).
        ``policies`` are the privacy policies the manifest commits per client;
        ``client_policies`` are the clients' own (what each trainer runs): a client given
        one refuses to commit to a manifest that does not commit it (threat model 9);
        ``release_noise_std`` is central DP noise the releasing party adds inside its
        release (:meth:`KeyHolderParty.reveal`), refused for masking, where the aggregator
        unmasks the exact sum and no single party releases it. ``federation_policy`` and
        ``federation_event`` (dp=client: the federation's policy and the hex digest of its
        event chain's head, the releases before this round, events in the store) go into
        the manifest, so opening this round commits them on chain. ``absent_members`` are
        decryption committee members (1..K) that do not take part."""
        if release_noise_std is not None and not (
            isinstance(release_noise_std, int | float)
            and math.isfinite(release_noise_std)
            and release_noise_std > 0
        ):
            raise InvalidUpdateError(
                f"round {round_id}: release noise std must be finite and > 0: {release_noise_std!r}"
            )
        refusal = self.scheme.release_noise_refusal
        if release_noise_std is not None and refusal is not None:
            raise ProtocolAbortError(
                f"round {round_id}: central DP noise needs a single releasing party; with "
                f"{self.scheme.name} {refusal} (use distributed noise)"
            )
        if release_noise_std is not None and self.committee is not None:
            raise ProtocolAbortError(
                f"round {round_id}: central DP noise needs a single releasing party; a "
                "decryption committee's partials combine to the exact sum (use distributed noise)"
            )
        clock = _ChainClock()
        events = events or {}
        excluded: dict[int, str] = {}
        manifest = self.manifest(
            round_id,
            selected=selected,
            weights=weights,
            expected_steps=expected_steps,
            policies=policies,
            federation_policy=federation_policy,
            federation_event=federation_event,
        )
        with clock.phase("open"):
            self.aggregator.open_round(manifest)
        session = self.scheme.start_round(
            round_id=round_id,
            client_ids=sorted(selected),
            dim=self.dim,
            **self._identities(selected),
        )
        dropped = [c for c in selected if c not in updates]
        session.setup(dropouts=dropped)
        for client_id in dropped:
            excluded[client_id] = "dropped out before committing (missed the deadline)"
        committed = self._commit_phase(
            round_id,
            session,
            updates,
            events,
            excluded,
            clock,
            manifest_digest=manifest.digest(),
            client_policies=client_policies or {},
        )
        for client_id, (party, submission) in sorted(committed.items()):
            if client_id in withhold_reveal:
                continue
            try:
                with clock.phase("reveal"):
                    party.reveal(round_id, submission)
            except (SecAggError, ChainError) as error:
                excluded[client_id] = f"reveal failed: {type(error).__name__}: {error}"
        return self._finish_round(
            manifest,
            session,
            excluded,
            clock,
            crash_after_commit=crash_after_commit,
            release_noise_std=release_noise_std,
            absent_members=absent_members,
        )

    def _commit_phase(
        self,
        round_id: int,
        session: RoundSession,
        updates: Mapping[int, np.ndarray],
        events: Mapping[int, PrivacyEventLike | None],
        excluded: dict[int, str],
        clock: _ChainClock,
        *,
        manifest_digest: Digest,
        client_policies: Mapping[int, PrivacyPolicy],
    ) -> dict[int, tuple[ClientParty, Submission]]:
        """Every client still up commits (blobs stay private); the phase is then closed.
        Merkle rounds: the clients sign for the manifest they received (the round is not on
        chain yet) and the aggregator opens the round with their root."""
        merkle = self.consortium.commit_mode == "merkle"
        committed: dict[int, tuple[ClientParty, Submission]] = {}
        for client_id in sorted(updates):
            party = ClientParty(
                client_id=client_id,
                consortium=self.consortium,
                policy=client_policies.get(client_id),
            )
            protect_before = session.stats.seconds["protect"]
            start = time.perf_counter()
            try:
                # a merkle client signs for the manifest it received (absent: no keyword)
                signs_for = {"manifest_digest": manifest_digest} if merkle else {}
                submission = party.commit(
                    round_id, session, updates[client_id], events.get(client_id), **signs_for
                )
            except (SecAggError, ChainError) as error:
                excluded[client_id] = f"{type(error).__name__}: {error}"
                continue
            finally:
                # protect() times itself inside the session; the rest is store and ledger.
                protect_seconds = session.stats.seconds["protect"] - protect_before
                clock.add("commit", max(0.0, time.perf_counter() - start - protect_seconds))
            committed[client_id] = (party, submission)
        signed = [s.signed for _, s in committed.values() if s.signed is not None]
        if merkle:
            self._post_root(round_id, signed, committed, excluded, clock)
        elif signed:
            try:
                with clock.phase("commit"):
                    _, refused = self.aggregator.submit_batch(round_id, signed)
            except ChainError as error:  # the batch failed whole: nobody in it committed
                refused = {c.client: f"{type(error).__name__}: {error}" for c in signed}
            # A client whose signed commitment is not on chain commits by itself.
            with clock.phase("commit"):
                on_chain = {c.client.lower() for c in self.consortium.ledger.commitments(round_id)}
            for client_id, (party, submission) in list(committed.items()):
                address = self.consortium.address_of(client_id)
                if submission.signed is None or address.lower() in on_chain:
                    continue
                try:
                    with clock.phase("commit"):
                        party.commit_directly(round_id, submission)
                except ChainError as error:
                    reason = refused.get(address) or f"{type(error).__name__}: {error}"
                    excluded[client_id] = f"batch commit refused: {reason}"
                    del committed[client_id]
        with clock.phase("commit"):
            self.aggregator.close_commit_phase(round_id)
        return committed

    def _post_root(
        self,
        round_id: int,
        signed: list[Any],
        committed: dict[int, tuple[ClientParty, Submission]],
        excluded: dict[int, str],
        clock: _ChainClock,
    ) -> None:
        """Merkle rounds: the aggregator opens the round with one root over the acceptable
        signed leaves. A refused client is out of the round (its leaf is not acceptable, so
        no omission can be proven); a client left out otherwise finds it at its inclusion
        check."""
        try:
            with clock.phase("commit"):
                _, refused = self.aggregator.submit_root(round_id, signed)
        except ChainError as error:  # no root: nobody committed
            refused = {c.client: f"{type(error).__name__}: {error}" for c in signed}
        lowered = {address.lower(): reason for address, reason in refused.items()}
        for client_id in list(committed):
            reason = lowered.get(self.consortium.address_of(client_id).lower())
            if reason is not None:
                excluded[client_id] = f"leaf refused: {reason}"
                del committed[client_id]

    def _identities(self, selected: Sequence[int]) -> dict[str, Any]:
        """What the scheme needs of the clients' ledger identities to start a round (masking
        authenticates its key stages with them: Bonawitz et al. 2017, malicious server)."""
        return self.scheme.ledger_round_kwargs(
            ledger=self.consortium.ledger,
            accounts={c: self.consortium.account_of(c) for c in selected},
            addresses={c: self.consortium.address_of(c) for c in selected},
        )

    def resume_round(
        self,
        round_id: int,
        *,
        crash_after_commit: Collection[int] = (),
        release_noise_std: float | None = None,
    ) -> SecureRoundOutcome:
        """A restarted aggregator finishes an open round from the ledger and the store.

        Everything it needs is durable: the manifest (by the config digest on chain), the
        commitments (ledger) and the blobs (store). Each client counts once because the
        ledger holds one commitment per client and round. A scheme that does not declare
        :attr:`~secagg._scheme.ProtectionScheme.supports_resume` (masking: the unmasking
        state, routed shares, lives in the server's memory) aborts instead.
        """
        if not self.scheme.supports_resume:
            raise ProtocolAbortError(
                f"round {round_id}: a {self.scheme.name} round cannot resume after a server restart"
            )
        manifest = self.aggregator.manifest(round_id)
        session = self.scheme.start_round(
            round_id=round_id, client_ids=[c.client_id for c in manifest.clients], dim=manifest.dim
        )
        session.setup()
        self.aggregator.close_commit_phase(round_id)
        return self._finish_round(
            manifest,
            session,
            {},
            _ChainClock(),
            crash_after_commit=crash_after_commit,
            release_noise_std=release_noise_std,  # central DP: as run_round
        )

    def _finish_round(
        self,
        manifest: RoundManifest,
        session: RoundSession,
        excluded: dict[int, str],
        clock: _ChainClock,
        *,
        crash_after_commit: Collection[int],
        release_noise_std: float | None = None,
        absent_members: Collection[int] = (),
    ) -> SecureRoundOutcome:
        """Collect, combine, publish, release, finalize and audit one round."""
        round_id = manifest.round_id
        ledger = self.consortium.ledger
        with clock.phase("publish"):
            collected = self.aggregator.collect(round_id, manifest)
        for client in manifest.clients:
            if client.client_id not in collected.commitments:
                excluded.setdefault(client.client_id, "no commitment before the deadline")
        for client_id, reason in collected.unrevealed.items():
            excluded.setdefault(client_id, reason)
        total = None
        aggregate_digest = None
        committee_stats: dict[int, dict[str, float]] = {}
        if collected.blobs:
            try:
                # A merkle round released by the key holder: the aggregator signs the
                # publication and the key holder sends it with its reservation.
                publication = None
                with clock.phase("publish"):
                    if (
                        self.consortium.commit_mode == "merkle"
                        and self.committee is None
                        and self.key_holder.attests
                    ):
                        aggregate, publication = self.aggregator.combine_and_sign(
                            round_id, session, collected
                        )
                    else:
                        aggregate, _ = self.aggregator.combine_and_publish(
                            round_id, session, collected
                        )
                aggregate_digest = keccak256(aggregate)  # the digest just published
                survivors = [c for c in session.combined if c not in crash_after_commit]
                with clock.phase("release"):
                    if self.committee is not None:
                        total, committee_round = self.committee.reveal(
                            round_id, manifest, session, aggregate, absent=absent_members
                        )
                        committee_stats = {
                            j: stats.as_dict() for j, stats in committee_round.stats.items()
                        }
                    else:
                        # central DP noise, added inside the release, and a merkle
                        # round's signed publication (absent: no keyword)
                        extra: dict[str, Any] = {}
                        if release_noise_std is not None:
                            extra["noise_std"] = release_noise_std
                        if publication is not None:
                            extra["publication"] = publication
                        total, _ = self.key_holder.reveal(
                            round_id, manifest, session, aggregate, survivors=survivors, **extra
                        )
            except (SecAggError, ChainError) as error:
                for client_id in collected.blobs:
                    excluded.setdefault(
                        client_id, f"round aborted: {type(error).__name__}: {error}"
                    )
                total = None
            excluded.update(collected.rejected)
            if aggregate_digest is not None:
                with clock.phase("finalize"):
                    self.aggregator.finalize(round_id)
        included = tuple(session.combined) if total is not None else ()
        for client_id in included:
            excluded.pop(client_id, None)
        findings: tuple[Finding, ...] = ()
        flagged: dict[int, int] = {}
        if self.audit_each_round:
            with clock.phase("audit"):
                _, round_findings = self.auditor.audit_round(round_id)
                findings = tuple(round_findings)
                flagged = self._flag(round_findings)
        gas_by_phase = dict.fromkeys(CHAIN_PHASES, 0)
        for function, gas in ledger.gas_by_round(round_id).items():
            phase = PHASE_OF_FUNCTION.get(function, "audit")
            gas_by_phase[phase] += gas
        return SecureRoundOutcome(
            round_id=round_id,
            total=total,
            included=included,
            excluded=excluded,
            stats=session.stats,
            gas_used=sum(gas_by_phase.values()),
            chain_seconds=clock.seconds,
            config_digest=manifest.digest(),
            aggregate_digest=aggregate_digest,
            findings=findings,
            flagged=flagged,
            gas_by_phase=gas_by_phase,
            chain_seconds_by_phase=dict(clock.by_phase),
            committee=committee_stats,
        )

    def _flag(self, findings: Sequence[Finding]) -> dict[int, int]:
        """File one flag per (round, client at fault) on the ledger; returns id -> code."""
        flagged = {}
        for (round_id, address), code in culprits(findings).items():
            try:
                self.consortium.ledger.flag(
                    address, round_id, code, sender=self.consortium.parties.auditor
                )
            except AlreadyFlagged:
                continue
            except ChainError as error:  # a failed flag must not stop the federation
                log.warning("round %d: could not flag %s: %s", round_id, address, error)
                continue
            flagged[self.consortium.client_id_of(address)] = code
        return flagged
