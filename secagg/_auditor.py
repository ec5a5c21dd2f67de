"""The auditor: re-checks rounds from the ledger and the artifact store alone.

An auditor holds no data and no key. For each round (or one) it checks:

* **manifest**: the ``config_digest`` on chain names a manifest present in the store; when
  every revealed blob fails against the manifest (say, a wrong ``dim``), the manifest and
  its author, the aggregator that opened the round, are blamed, never the clients (each
  client's commitment binds the manifest digest it saw, so they all answered that one).
* **blobs**: every blob revealed on chain is in the store, hashes to its commitment and is
  a valid blob of the round's scheme (otherwise the client is named). A committed client
  that never revealed is a dropout (its negative event comes from ``finalize``), not a
  finding. Copies rest on commit order: a later commitment of the same digest is a copy,
  for randomized schemes (CKKS, masking); under ``plain`` equal updates give equal blobs,
  so equal digests are not called copies.
* **aggregate**: the participants include every client that committed, revealed on chain
  and holds a valid blob (one left out names the aggregator; the client keeps its positive
  event), and recombining their blobs, in participant order, reproduces the published
  aggregate digest (an aggregate that adds an uncommitted blob or leaves one out fails
  here; CKKS aggregates also list their inputs, which names the blob).
* **reveal**: for CKKS rounds, the key holder reserved the release and attested either a
  reveal whose bytes are in the store, or a refusal whose reason holds (too few inputs:
  the participants are below the manifest's ``min_clients``; a mismatching aggregate: the
  aggregate check failed). A reservation never attested is named. With a decryption
  committee (``committee_size`` > 1): the manifest's public context is the collective key
  of the key shares whose digests the members committed on chain (with the CRP seed fixed
  there); the attested reveal is byte for byte what the stored, attested partials combine
  to (:func:`secagg._committee_round.combine_attested`, the combiner's own procedure); a
  member whose partial the cross-check shows wrong is named (a finding without a client:
  members are not clients); a refusal for too few or inconsistent partials holds only if
  the attested partials indeed release nothing.
* **privacy**: each committed privacy event belongs to an unbroken hash chain of the client's
  events (walked back through the store); before any accounting, the event must match the
  privacy policy the round's manifest commits for that client (mechanism, sample rate,
  sigma, clip norm, delta, accountant, Poisson flag, steps; cumulative steps at most the
  policy's steps per round times the round), so a client cannot choose its own parameters
  and a hostile event cannot make composition run long; then the cumulative epsilon,
  re-derived independently with Google's ``dp_accounting`` (:func:`dp.independent_epsilon`:
  RDP, PLD for ``prv``; no torch, no Opacus), matches the claim in the event and on chain
  within ``epsilon_tolerance`` (absolute, plus the ledger's 1e-6 fixed-point rounding, plus
  the two libraries' agreement band :data:`ACCOUNTANT_AGREEMENT`), and is within the
  ledger's budget (beyond that band). Under ``dp=client`` the same holds for the
  federation's event chain, which each manifest commits up to the previous round
  (``federation_event``, against ``federation_policy``); it must cover every earlier
  published round and extend the chain committed before.
* **reputation** (whole-ledger audits only): each client's positive and negative counts on
  chain equal those implied by the events (timely commits in finalized rounds, missed
  deadlines, auditor flags).

What is trusted: the ledger's contract code and state (consensus), keccak256, the
accountant maths of ``dp_accounting``, and the scheme's public parameters as committed in the
manifest. What is not checked: that a client trained on its real data, that the DP noise
was really drawn (a client's own randomness is not verifiable), and the decryption itself
(the key holder's release is attested, not proven).

What the auditor names, per role (the full threat model is in :mod:`secagg._protocol`):

==========  ==========================================  ================================
role        named (after the fact)                      not visible to the auditor
==========  ==========================================  ================================
client      blob mismatch/missing after a reveal,       whether it trained on real data
            invalid blob, copied commitment, privacy    or drew its DP noise
            claim, budget (flagged on chain)
aggregator  bad manifest, committed blob left out,      blobs it leaked before the commit
            aggregate that is not the recombined sum    phase closed
key holder  reservation never attested, false refusal,  the decryption itself (attested,
            attested reveal missing from the store      not proven)
ledger      (trusted: its state is the evidence)        consensus faults
==========  ==========================================  ================================

Threat model of the auditor: honest (anyone can run it; it needs no secret) but it only
sees the ledger and the store. It is after the fact: it names culprits and flags clients
(a reputation penalty), it cannot undo a release. Faults of the aggregator or the key
holder are findings without a client (no on-chain penalty: the contract keeps reputation
for clients only); the detail names the account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from chain import EPSILON_SCALE, ChainError, Commitment, Ledger, RoundInfo, RoundStatus
from dp import PrivacyEvent, independent_epsilon
from dp._errors import DPError
from dp._events import MAX_EVENT_BYTES
from secagg._audit_report import CANNOT_AUDIT_CHECK, AuditReport, Finding, RoundAudit
from secagg._committee_round import (
    REFUSAL_BAD_PARTIALS,
    REFUSAL_TOO_FEW_PARTIALS,
    attested_partials,
    combine_attested,
)
from secagg._digest import Digest, keccak256
from secagg._errors import SecAggError, UnknownSchemeError
from secagg._hydra import scheme_class
from secagg._manifest import MAX_MANIFEST_BYTES, PrivacyPolicy, RoundManifest
from secagg._merkle_round import check_leaves
from secagg._recombine import aggregate_inputs, recombine
from secagg._roles import (
    REFUSAL_AGGREGATE_MISMATCH,
    REFUSAL_REASONS,
    REFUSAL_TOO_FEW_INPUTS,
    ZERO_DIGEST,
)
from secagg._store import ArtifactNotFoundError, ArtifactStore
from secagg.ckks import (
    CommitteeParams,
    InsufficientPartialsError,
    PartialMismatchError,
    RevealPolicy,
    verify_public_context,
)

_T = TypeVar("_T")
DEFAULT_EPSILON_TOLERANCE = 1e-6
_GENESIS = "0x" + "00" * 32
CHECKS = ("manifest", "blobs", "aggregate", "reveal", "privacy", "budget")
# Checks whose findings name a client at fault, and the reason code a flag on the ledger
# carries for each (a flag lowers the client's reputation).
CLIENT_CHECKS = {"blobs": 1, "invalid-blob": 2, "privacy": 3, "budget": 4}
# Reason codes of challenges upheld on chain (merkle rounds; the contract's REASON_*).
REASON_OMISSION = 101
REASON_OVER_BUDGET = 102
REASON_EQUIVOCATION = 103


@dataclass
class _ClientHistory:
    """What the auditor learned of one client across the rounds it looked at."""

    last_event_digest: str | None = None
    positive: int = 0
    negative: int = 0


@dataclass
class Auditor:
    """An incremental auditor over one ledger and store (see the module docstring).

    :meth:`audit_round` checks rounds in ascending order and remembers each client's event
    chain and reputation counts, so a protocol can audit every round as it closes; the
    :func:`audit` function runs a fresh one over a whole ledger.
    """

    ledger: Ledger
    store: ArtifactStore
    epsilon_tolerance: float
    findings: list[Finding] = field(default_factory=list)
    events: dict[str, PrivacyEvent] = field(default_factory=dict)
    histories: dict[str, _ClientHistory] = field(default_factory=dict)
    # PrivacyEvent.client_id -> the (lower-case) address that first committed its events
    event_owners: dict[str, str] = field(default_factory=dict)
    # dp=client: the federation event chain's head last committed, and the last round
    # whose aggregate was published (its release must be in the next committed head)
    federation_head: str | None = None
    last_published_round: int | None = None

    def find(self, round_id: int, check: str, detail: str, client: str | None = None) -> None:
        self.findings.append(Finding(round_id=round_id, check=check, detail=detail, client=client))

    def history(self, address: str) -> _ClientHistory:
        return self.histories.setdefault(address.lower(), _ClientHistory())

    # ----------------------------------------------------------------- one round
    def audit_round(self, round_id: int) -> tuple[RoundAudit, list[Finding]]:
        """Check one round; returns its summary and the findings it produced."""
        start = len(self.findings)
        round_audit = self._audit_round(round_id)
        return round_audit, self.findings[start:]

    def _audit_round(self, round_id: int) -> RoundAudit:
        info = self.ledger.round_info(round_id)
        checks = dict.fromkeys(CHECKS, True)
        if info.merkle:
            checks["root"] = True
            commitments = self._merkle(info, checks)
        else:
            commitments = self.ledger.commitments(round_id)

        def failed(check: str) -> None:
            checks[check] = False

        def guarded(check: str, run: Callable[[], _T], default: _T) -> _T:
            """Run one check; an unexpected failure is a cannot-audit finding, not a crash
            (a ledger that cannot be read still stops the whole audit)."""
            try:
                return run()
            except (ChainError, OSError):
                raise
            except Exception as error:  # untrusted input must not crash the audit
                failed(check)
                self.find(
                    round_id,
                    CANNOT_AUDIT_CHECK,
                    f"the {check} check could not run: {type(error).__name__}: {error}"[:500],
                )
                return default

        manifest = guarded("manifest", lambda: self._manifest(info, failed), None)
        revealed = {a.lower() for a in self.ledger.revealed(round_id)}
        no_blobs: dict[str, bytes] = {}
        blobs = guarded(
            "blobs",
            lambda: self._blobs(info, manifest, commitments, revealed, failed),
            no_blobs,
        )
        if manifest is not None:
            aggregate_ok = guarded(
                "aggregate",
                lambda: self._aggregate(info, manifest, commitments, blobs, revealed, failed),
                False,
            )
            guarded("reveal", lambda: self._reveal(info, manifest, aggregate_ok, failed), None)
            guarded("privacy", lambda: self._privacy(info, manifest, commitments, failed), None)
            guarded("privacy", lambda: self._federation_privacy(info, manifest, failed), None)
        self._count_reputation(info, commitments, revealed)
        return RoundAudit(
            round_id=round_id,
            status=info.status.name.lower(),
            committed=len(commitments),
            participants=len(info.participants or ()),
            checks=checks,
        )

    def _merkle(self, info: RoundInfo, checks: dict[str, bool]) -> list[Commitment]:
        """Merkle rounds: re-derive the root from the stored leaf set and check every leaf
        (the aggregator is named for a leaf set that is missing, does not hash to the root
        or holds a leaf its client did not validly sign for this round and manifest), and
        report the challenges upheld on chain. Returns the valid leaves as commitments (an
        over-budget leaf, which a challenge would catch, is then named by the budget check)."""
        round_id = info.round_id
        check = check_leaves(self.ledger, self.store, round_id)
        poster = self._sender_of("RootPosted", round_id)
        for problem in check.problems:
            checks["root"] = False
            self.find(round_id, "root", f"aggregator {poster}: {problem}")
        for event in self.ledger.events("ChallengeUpheld", argument_filters={"round": round_id}):
            accused, client = str(event.args["accused"]), str(event.args["client"])
            code = int(event.args["reasonCode"])
            checks["root"] = False
            if code == REASON_OMISSION:
                if self.ledger.merkle_challenges(round_id, client) & 1 == 0:
                    continue  # void: the client equivocated (named below), not a censorship
                self.find(
                    round_id,
                    "root",
                    f"aggregator {accused} left the validly signed leaf of client {client} "
                    "out of the root (omission proven on chain; the client counts as done)",
                )
            else:
                what = (
                    "signed two different leaves"
                    if code == REASON_EQUIVOCATION
                    else ("claimed epsilon over the budget in a leaf under the root")
                )
                self.find(round_id, "challenge", f"{what} (challenge upheld on chain)", client)
        return check.commitments

    def _manifest(self, info: RoundInfo, failed: Callable[[str], None]) -> RoundManifest | None:
        """The round's manifest, if it is present, for this round and these clients, and its
        public material is in the store (otherwise no blob can be judged, and no client is
        blamed for what is the aggregator's declaration)."""
        try:
            manifest = RoundManifest.from_bytes(
                self.store.get(info.config_digest, max_bytes=MAX_MANIFEST_BYTES)
            )
            problem = None
            if manifest.round_id != info.round_id:
                problem = f"manifest is for round {manifest.round_id}"
            elif {c.address.lower() for c in manifest.clients} != {a.lower() for a in info.clients}:
                problem = "manifest clients differ from the round's selected clients"
            elif manifest.public_material is not None:
                self.store.get(Digest(bytes.fromhex(manifest.public_material)))
        except (SecAggError, ArtifactNotFoundError, ValueError) as error:
            problem = f"round manifest unavailable: {error}"
        if problem is None:
            return manifest
        failed("manifest")
        self.find(info.round_id, "manifest", problem)
        return None

    def _blobs(
        self,
        info: RoundInfo,
        manifest: RoundManifest | None,
        commitments: list[Commitment],
        revealed: set[str],
        failed: Callable[[str], None],
    ) -> dict[str, bytes]:
        """Committed blobs that are present, match their digest and parse (by address)."""
        valid: dict[str, bytes] = {}
        first_committer: dict[bytes, str] = {}
        randomized = manifest is None or _randomized_blobs(manifest)
        invalid: list[tuple[str, str]] = []
        present = 0
        for commitment in commitments:
            address = commitment.client
            original = first_committer.setdefault(bytes(commitment.blob_digest), address)
            if original != address and randomized:
                failed("blobs")
                self.find(
                    info.round_id,
                    "blobs",
                    f"commits, after client {original}, the same blob digest (a copied commitment)",
                    address,
                )
                continue
            try:
                blob = self.store.get(commitment.blob_digest)
            except ArtifactNotFoundError:
                if address.lower() in revealed:
                    failed("blobs")
                    self.find(
                        info.round_id,
                        "blobs",
                        "revealed on chain, but its committed blob is missing from the store",
                        address,
                    )
                continue  # committed and never revealed: a dropout, penalized at finalize
            except SecAggError as error:
                failed("blobs")
                self.find(
                    info.round_id,
                    "blobs",
                    f"stored blob does not match its commitment ({error})",
                    address,
                )
                continue
            present += 1
            if manifest is not None:
                member = manifest.client_by_address(address)
                if member is None:
                    failed("blobs")
                    self.find(
                        info.round_id,
                        "blobs",
                        "commitment by a client not in the manifest",
                        address,
                    )
                    continue
                try:
                    recombine(manifest, [(member.client_id, blob)], self.store)
                except (SecAggError, ValueError) as error:
                    invalid.append((address, str(error)))
                    continue
            valid[address.lower()] = blob
        if invalid and manifest is not None:
            if len(invalid) == present:
                # No committed blob fits the manifest: the declaration is wrong, not the
                # clients, who each bound this manifest's digest in their commitment.
                failed("manifest")
                self.find(
                    info.round_id,
                    "manifest",
                    f"aggregator {self._opener(info.round_id)}: no committed blob fits the "
                    f"round manifest it declared ({len(invalid)} of {present} fail: "
                    f"{invalid[0][1]}); the manifest is at fault, not the clients",
                )
            else:
                for culprit, reason in invalid:
                    failed("blobs")
                    self.find(
                        info.round_id,
                        "invalid-blob",
                        f"committed blob is not a valid {manifest.scheme} blob: {reason}",
                        culprit,
                    )
        return valid

    def _aggregate(
        self,
        info: RoundInfo,
        manifest: RoundManifest,
        commitments: list[Commitment],
        blobs: dict[str, bytes],
        revealed: set[str],
        failed: Callable[[str], None],
    ) -> bool:
        """Whether the published aggregate is the recombined participants' blobs."""
        if info.aggregate_digest is None:
            return True
        participants = [p.lower() for p in info.participants or ()]
        committed = {c.client.lower(): c for c in commitments}
        for address in sorted((set(blobs) & revealed) - set(participants)):
            failed("aggregate")
            self.find(
                info.round_id,
                "aggregate",
                f"aggregator {self._publisher(info.round_id)} left out client "
                f"{committed[address].client}, which committed, revealed on chain and holds "
                "a valid blob (the client is not at fault)",
            )
        missing = [p for p in participants if p not in blobs]
        if missing:
            failed("aggregate")
            self.find(
                info.round_id,
                "aggregate",
                f"cannot recombine: {len(missing)} participant blob(s) missing or invalid",
            )
            return False
        ordered = []
        for address in participants:
            member = manifest.client_by_address(address)
            if member is None:
                failed("aggregate")
                self.find(info.round_id, "aggregate", "participant not in the manifest", address)
                return False
            ordered.append((member.client_id, blobs[address]))
        ordered.sort()
        try:
            recombined = recombine(manifest, ordered, self.store)
        except (SecAggError, ValueError) as error:
            failed("aggregate")
            self.find(info.round_id, "aggregate", f"participants' blobs do not recombine: {error}")
            return False
        if keccak256(recombined) == info.aggregate_digest:
            return True
        failed("aggregate")
        detail = (
            f"aggregator {self._publisher(info.round_id)}: recombining the participants' "
            "committed blobs does not give the published aggregate"
        )
        try:
            published = self.store.get(info.aggregate_digest)
        except (SecAggError, ArtifactNotFoundError):
            self.find(info.round_id, "aggregate", detail + " (published aggregate not in store)")
            return False
        inputs = _safe_inputs(manifest, published)
        if inputs is not None:
            committed_digests = {bytes(committed[p].blob_digest) for p in participants}
            extra = [d.hex() for d in inputs if bytes(d) not in committed_digests]
            if extra:
                detail += f"; it includes uncommitted blob(s) {', '.join(extra)}"
            left_out = [
                committed[p].client
                for p in participants
                if bytes(committed[p].blob_digest) not in {bytes(d) for d in inputs}
            ]
            if left_out:
                detail += f"; it leaves out participant(s) {', '.join(left_out)}"
        self.find(info.round_id, "aggregate", detail)
        return False

    def _sender_of(self, event_name: str, round_id: int) -> str:
        for event in self.ledger.events(event_name, argument_filters={"round": round_id}):
            return str(self.ledger.transaction_sender(event.tx_hash))
        return "(unknown)"

    def _publisher(self, round_id: int) -> str:
        """Who published the round's aggregate (the sender of the publishing transaction;
        in a merkle round the aggregator that opened it, the only account whose
        publication the contract takes, sent by itself or signed for the key holder)."""
        found = self._sender_of("AggregatePublished", round_id)
        return found if found != "(unknown)" else self._opener(round_id)

    def _opener(self, round_id: int) -> str:
        """Who opened the round, i.e. declared its manifest."""
        return self._sender_of("RoundOpened", round_id)

    def _reveal(
        self,
        info: RoundInfo,
        manifest: RoundManifest,
        aggregate_ok: bool,
        failed: Callable[[str], None],
    ) -> None:
        if not _releases_via_key_holder(manifest) or info.status < RoundStatus.RELEASING:
            return
        if _committee_size(manifest) > 1:
            self._committee_reveal(info, manifest, aggregate_ok, failed)
            return
        if info.status is RoundStatus.RELEASING:
            failed("reveal")
            self.find(
                info.round_id,
                "reveal",
                "the key holder reserved the release but attested neither a reveal nor a refusal",
            )
            return
        if info.refusal_code:
            self._refusal(info, manifest, aggregate_ok, failed)
            return
        if info.reveal_digest is None or info.reveal_digest == ZERO_DIGEST:
            failed("reveal")
            self.find(info.round_id, "reveal", "the key holder attested no reveal")
            return
        try:
            self.store.get(info.reveal_digest)
        except (SecAggError, ArtifactNotFoundError) as error:
            failed("reveal")
            self.find(info.round_id, "reveal", f"attested reveal not verifiable: {error}")

    def _refusal(
        self,
        info: RoundInfo,
        manifest: RoundManifest,
        aggregate_ok: bool,
        failed: Callable[[str], None],
    ) -> None:
        """Accept an attested refusal whose reason holds; name the key holder otherwise."""
        code = info.refusal_code
        participants = len(info.participants or ())
        min_clients = manifest.scheme_config.get("min_clients")
        problem = None
        if code == REFUSAL_TOO_FEW_INPUTS:
            if isinstance(min_clients, int) and participants >= min_clients:
                problem = (
                    f"refused for too few inputs, but the aggregate has {participants} >= "
                    f"min_clients={min_clients}"
                )
        elif code == REFUSAL_AGGREGATE_MISMATCH:
            if aggregate_ok:
                problem = "refused a mismatching aggregate, but the aggregate recombines"
        elif code not in REFUSAL_REASONS:
            problem = f"refused with unknown reason code {code}"
        if problem is not None:
            failed("reveal")
            self.find(
                info.round_id,
                "reveal",
                f"key holder {self._sender_of('ReleaseRefused', info.round_id)}: {problem}",
            )

    # ---------------------------------------------------------- committee release
    def _committee_reveal(
        self,
        info: RoundInfo,
        manifest: RoundManifest,
        aggregate_ok: bool,
        failed: Callable[[str], None],
    ) -> None:
        """A committee round: the collective key is the combination of the committed key
        shares; the released sum is what the attested partials combine to (a member whose
        partial the cross-check shows wrong is named); a refusal's reason holds."""
        round_id = info.round_id

        def find(detail: str) -> None:
            failed("reveal")
            self.find(round_id, "reveal", detail)

        committee = self.ledger.committee()
        if committee is None:
            find("the manifest asks for a decryption committee, but none is set up on chain")
            return
        params = CommitteeParams(size=committee.size, threshold=committee.threshold)
        wanted = (_committee_size(manifest), manifest.scheme_config.get("committee_threshold"))
        if (params.size, params.threshold) != wanted:
            find(f"the committee on chain ({params.threshold} of {params.size}) differs")
            return
        if manifest.public_material is None:
            find("the manifest names no public context")
            return
        context = self.store.get(bytes.fromhex(manifest.public_material.removeprefix("0x")))
        digests = [committee.share_digests.get(j) for j in params.members]
        if any(d is None for d in digests):
            find("not every committee member committed its key share")
            return
        try:
            verify_public_context(
                context,
                committee=params,
                crp_seed=bytes(committee.seed),
                shares=[self.store.get(d) for d in digests if d is not None],
                share_digests=[Digest(d) for d in digests if d is not None],
            )
        except (SecAggError, ArtifactNotFoundError) as error:
            find(f"the collective public key is not the committed key shares': {error}")
            return
        if info.status is RoundStatus.RELEASING:
            find("the committee reserved the release but attested neither a reveal nor a refusal")
            return
        if info.refusal_code in (REFUSAL_AGGREGATE_MISMATCH, REFUSAL_TOO_FEW_INPUTS):
            self._refusal(info, manifest, aggregate_ok, failed)
            return
        if not info.refusal_code and info.reveal_digest in (None, ZERO_DIGEST):
            find("the committee attested neither a reveal nor a refusal")
            return
        partials = attested_partials(self.ledger, self.store, round_id)
        aggregate = self.store.get(info.aggregate_digest) if info.aggregate_digest else b""
        policy = RevealPolicy(
            min_clients=int(manifest.scheme_config.get("min_clients", 2)),
            precision_bits=int(manifest.scheme_config.get("precision_bits", 24)),
            flood_std_bits=int(manifest.scheme_config.get("flood_std_bits", 24)),
        )
        try:
            values, _, named = combine_attested(
                aggregate, partials, public_context=context, committee=params, policy=policy
            )
        except (InsufficientPartialsError, PartialMismatchError) as error:
            if info.refusal_code == REFUSAL_TOO_FEW_PARTIALS and isinstance(
                error, InsufficientPartialsError
            ):
                return
            if info.refusal_code == REFUSAL_BAD_PARTIALS and isinstance(
                error, PartialMismatchError
            ):
                return
            if info.refusal_code:
                return  # refused, and indeed nothing can be released from these partials
            find(f"a sum was attested, but the attested partials release nothing: {error}")
            return
        for member, why in sorted(named.items()):
            find(
                f"committee member {member} ({committee.members[member - 1]}) published a "
                f"wrong partial decryption: {why}"
            )
        if info.refusal_code:
            find(
                f"committee refused (code {info.refusal_code}), but the attested partials "
                "release the sum"
            )
            return
        try:
            released = self.store.get(info.reveal_digest) if info.reveal_digest else b""
        except (SecAggError, ArtifactNotFoundError) as error:
            find(f"attested reveal not verifiable: {error}")
            return
        if released != np.asarray(values, dtype="<f8").tobytes():
            find("the attested reveal is not the sum the attested partials release")

    # ----------------------------------------------------------------- privacy
    def _event(self, digest_hex: str) -> PrivacyEvent:
        cached = self.events.get(digest_hex)
        if cached is None:
            data = self.store.get(
                Digest(bytes.fromhex(digest_hex.removeprefix("0x"))), max_bytes=MAX_EVENT_BYTES
            )
            cached = PrivacyEvent.from_bytes(data)
            if "0x" + keccak256(cached.canonical_bytes()).hex() != digest_hex:
                raise DPError("event bytes are not canonical")
            self.events[digest_hex] = cached
        return cached

    def _chain_to(self, digest_hex: str) -> list[PrivacyEvent]:
        """The event and all its ancestors (oldest first), walked back through the store."""
        chain = []
        seen = set()
        current = digest_hex
        while current != _GENESIS:
            if current in seen:
                raise DPError("the event chain loops")
            seen.add(current)
            event = self._event(current)
            chain.append(event)
            current = event.previous_digest
        chain.reverse()
        return chain

    def _privacy(
        self,
        info: RoundInfo,
        manifest: RoundManifest,
        commitments: list[Commitment],
        failed: Callable[[str], None],
    ) -> None:
        budget = info.epsilon_budget_fixed / EPSILON_SCALE
        checked = 0  # events checked against a committed policy
        off_policy: list[tuple[str, list[str]]] = []
        for commitment in commitments:
            address = commitment.client
            member = manifest.client_by_address(address)
            if commitment.event_digest == ZERO_DIGEST:
                if manifest.dp_mode == "sample":
                    failed("privacy")
                    self.find(info.round_id, "privacy", "no privacy event committed", address)
                continue
            digest_hex = "0x" + bytes(commitment.event_digest).hex()
            history = self.history(address)
            try:
                chain = self._chain_to(digest_hex)
                refused = _policy_problems(
                    chain,
                    None if member is None else member.policy,
                    info.round_id,
                    expected_steps=None if member is None else member.expected_steps,
                )
                # Composition runs only on parameters the manifest committed (bounded steps).
                checked += member is not None and member.policy is not None
                recomputed = None if refused else independent_epsilon(chain)
            except (DPError, SecAggError, ArtifactNotFoundError, ValueError) as error:
                failed("privacy")
                self.find(
                    info.round_id, "privacy", f"privacy event chain unusable: {error}", address
                )
                continue
            if recomputed is None:
                off_policy.append((address, refused))
                history.last_event_digest = digest_hex
                continue
            event = chain[-1]
            problems = []
            owner = self.event_owners.setdefault(event.client_id, address.lower())
            if owner != address.lower():
                problems.append(
                    f"commits the privacy events of {event.client_id!r}, which client {owner} "
                    "commits (another client's history hides its own spending)"
                )
            if event.round_id != info.round_id:
                problems.append(f"event is for round {event.round_id}")
            if history.last_event_digest is not None and history.last_event_digest not in {
                "0x" + e.digest().hex() for e in chain
            }:
                problems.append("event history forks from the client's earlier committed events")
            # The claim comes from Opacus, the recomputation from dp_accounting: they may
            # differ by the two libraries' agreement band on top of the tolerance.
            agreement = accountant_agreement(event.accountant, recomputed)
            tolerance = self.epsilon_tolerance + 1.0 / EPSILON_SCALE + agreement
            if abs(event.cumulative_epsilon - recomputed) > tolerance:
                problems.append(
                    f"event claims cumulative epsilon {event.cumulative_epsilon:.6f}, "
                    f"its parameters give {recomputed:.6f}"
                )
            if abs(commitment.epsilon - recomputed) > tolerance:
                problems.append(
                    f"ledger claim {commitment.epsilon:.6f} differs from re-derived "
                    f"{recomputed:.6f}"
                )
            if problems:
                failed("privacy")
                self.find(info.round_id, "privacy", "; ".join(problems), address)
            if recomputed - agreement > budget + self.epsilon_tolerance:
                failed("budget")
                self.find(
                    info.round_id,
                    "budget",
                    f"re-derived cumulative epsilon {recomputed:.6f} exceeds the budget "
                    f"{budget:.6f}",
                    address,
                )
            history.last_event_digest = digest_hex
        self._off_policy(info, off_policy, checked, failed)

    def _off_policy(
        self,
        info: RoundInfo,
        off_policy: list[tuple[str, list[str]]],
        checked: int,
        failed: Callable[[str], None],
    ) -> None:
        """Name each client whose event is off the manifest's policy, unless no checked event
        is on it: then the declaration is wrong, not the clients (as for blobs), and the
        aggregator that declared it is named instead."""
        if not off_policy:
            return
        if len(off_policy) == checked:
            failed("manifest")
            self.find(
                info.round_id,
                "manifest",
                f"aggregator {self._opener(info.round_id)}: no committed privacy event matches "
                f"the privacy policy it declared ({checked} of {checked} fail: "
                f"{'; '.join(off_policy[0][1])}); the manifest is at fault, not the clients",
            )
            return
        for address, refused in off_policy:
            failed("privacy")
            self.find(
                info.round_id,
                "privacy",
                "event does not match the privacy policy the manifest commits (refused "
                "before composition): " + "; ".join(refused),
                address,
            )

    def _federation_privacy(
        self, info: RoundInfo, manifest: RoundManifest, failed: Callable[[str], None]
    ) -> None:
        """dp=client: the federation's event chain the manifest commits (its releases before
        this round) matches the committed federation policy, covers every earlier published
        round, extends the head committed before, and its epsilon, recomputed like a
        client's, matches its claim and the budget. Findings name the aggregator (who
        declared the manifest); no client is at fault."""
        published = self.last_published_round
        if info.aggregate_digest is not None and manifest.dp_mode == "client":
            self.last_published_round = info.round_id
        if manifest.dp_mode != "client":
            return
        policy = manifest.federation_policy
        head = manifest.federation_event
        problems: list[str] = []
        if policy is None:
            problems.append("commits no federation privacy policy under dp=client")
        if head is None:
            if published is not None:
                problems.append(
                    f"commits no federation privacy event, but round {published} was released"
                )
            self._federation_findings(info, problems, failed)
            return
        try:
            chain = self._chain_to("0x" + head)
        except (DPError, SecAggError, ArtifactNotFoundError, ValueError) as error:
            problems.append(f"federation event chain unusable: {error}")
            self._federation_findings(info, problems, failed)
            return
        refused = _policy_problems(chain, policy, max(info.round_id - 1, 0))
        event = chain[-1]
        if event.round_id >= info.round_id:
            problems.append(f"federation event is for round {event.round_id}, not an earlier one")
        if published is not None and event.round_id < published:
            problems.append(
                f"federation event chain ends at round {event.round_id}, leaving out the "
                f"release of round {published}"
            )
        if self.federation_head is not None and self.federation_head not in {
            e.digest().hex() for e in chain
        }:
            problems.append("federation event chain forks from the one committed before")
        if refused:
            problems.append(
                "federation event does not match the committed federation policy (refused "
                "before composition): " + "; ".join(refused)
            )
            self._federation_findings(info, problems, failed)
            return
        recomputed = independent_epsilon(chain)
        agreement = accountant_agreement(event.accountant, recomputed)
        tolerance = self.epsilon_tolerance + 1.0 / EPSILON_SCALE + agreement
        if abs(event.cumulative_epsilon - recomputed) > tolerance:
            problems.append(
                f"federation event claims cumulative epsilon {event.cumulative_epsilon:.6f}, "
                f"its parameters give {recomputed:.6f}"
            )
        self.federation_head = head
        self._federation_findings(info, problems, failed)
        budget = info.epsilon_budget_fixed / EPSILON_SCALE
        if recomputed - agreement > budget + self.epsilon_tolerance:
            failed("budget")
            self.find(
                info.round_id,
                "budget",
                f"aggregator {self._opener(info.round_id)}: the federation's re-derived "
                f"cumulative epsilon {recomputed:.6f} exceeds the budget {budget:.6f}",
            )

    def _federation_findings(
        self, info: RoundInfo, problems: list[str], failed: Callable[[str], None]
    ) -> None:
        if problems:
            failed("privacy")
            self.find(
                info.round_id,
                "privacy",
                f"aggregator {self._opener(info.round_id)}: " + "; ".join(problems),
            )

    # ----------------------------------------------------------------- reputation
    def _count_reputation(
        self, info: RoundInfo, commitments: list[Commitment], revealed: set[str]
    ) -> None:
        """Mirror ``finalize``: +1 for committed and revealed, -1 for every other client.
        Merkle rounds (settled after their window): +1 for participants and proven
        omissions, -1 for the others."""
        if not info.finalized:
            return
        done = {c.client.lower() for c in commitments} & revealed
        if info.merkle:
            done = {p.lower() for p in info.participants or ()} | {
                a.lower()
                for a in info.clients
                if self.ledger.merkle_challenges(info.round_id, a) & 1
            }
        for address in info.clients:
            history = self.history(address)
            if address.lower() in done:
                history.positive += 1
            else:
                history.negative += 1

    def check_reputation(self, last_round: int) -> None:
        for event in self.ledger.events("Flagged"):
            self.history(str(event.args["client"])).negative += 1
        for event in self.ledger.events("ChallengeUpheld"):
            self.history(str(event.args["accused"])).negative += 1
        for event in self.ledger.events("OmissionVoided"):
            self.history(str(event.args["aggregator"])).negative -= 1
        for address, history in sorted(self.histories.items()):
            on_chain = self.ledger.reputation(address)
            if (on_chain.positive, on_chain.negative) != (history.positive, history.negative):
                self.find(
                    last_round,
                    "reputation",
                    f"on-chain reputation +{on_chain.positive}/-{on_chain.negative} does not "
                    f"match the events (+{history.positive}/-{history.negative})",
                    address,
                )


#: How far Opacus's epsilon (the client's claim) and ``dp_accounting``'s (the auditor's)
#: may differ: ``(relative, absolute)`` per accountant. RDP: the same orders, different
#: code (they agree to ~1e-5 relative). PRV against PLD: 1% plus Opacus's declared
#: ``eps_error`` of 0.01 (see :mod:`dp._independent`).
ACCOUNTANT_AGREEMENT = {"rdp": (1e-3, 0.0), "prv": (1e-2, 1e-2)}


def accountant_agreement(accountant: str, epsilon: float) -> float:
    """The agreement band of :data:`ACCOUNTANT_AGREEMENT` at ``epsilon``."""
    relative, absolute = ACCOUNTANT_AGREEMENT.get(accountant, (0.0, 0.0))
    return relative * epsilon + absolute


_POLICY_FIELDS = (
    "mechanism",
    "sample_rate",
    "max_grad_norm",
    "delta",
    "accountant",
    "poisson_sampling",
    "steps",
)


def _policy_problems(
    chain: list[PrivacyEvent],
    policy: PrivacyPolicy | None,
    round_id: int,
    *,
    expected_steps: int | None = None,
) -> list[str]:
    """Why ``chain`` (oldest first) may not be composed under the manifest's ``policy``
    (empty: compose). Checked before any accounting, so a hostile event cannot make
    composition run long: the cumulative steps are bounded by the policy's steps per round
    times ``round_id`` (the last round the chain may cover)."""
    event = chain[-1]
    if expected_steps is not None and event.steps != expected_steps:
        return [f"event claims {event.steps} steps, the round ran {expected_steps}"]
    if policy is None:
        return []
    problems = []
    for name in _POLICY_FIELDS:
        claimed, committed = getattr(event, name), getattr(policy, name)
        if claimed != committed:
            problems.append(f"{name} {claimed!r:.40} where the manifest commits {committed!r}")
    # Client-level rounds with dropouts run at a lower effective sigma (more epsilon, not
    # less); every other event runs exactly the committed sigma.
    sigma_ok = (
        event.noise_multiplier <= policy.noise_multiplier
        if policy.mechanism == "dp-fedavg-client"
        else event.noise_multiplier == policy.noise_multiplier
    )
    if not sigma_ok:
        problems.append(
            f"noise_multiplier {event.noise_multiplier!r} where the manifest commits "
            f"{policy.noise_multiplier!r}"
        )
    bound = policy.steps * max(round_id, 1)
    if event.cumulative_steps > bound:
        problems.append(
            f"cumulative_steps {event.cumulative_steps} exceed {bound} (the policy's "
            f"{policy.steps} steps per round up to round {round_id})"
        )
    return problems


def _randomized_blobs(manifest: RoundManifest) -> bool:
    """Whether the manifest's scheme never gives two honest clients the same blob (an
    unknown scheme counts as randomized: a repeated digest is then still a copy)."""
    try:
        return scheme_class(manifest.scheme).randomized_blobs
    except UnknownSchemeError:
        return True


def _releases_via_key_holder(manifest: RoundManifest) -> bool:
    """Whether a key holder (or committee) releases, and attests, the round's sum."""
    try:
        return scheme_class(manifest.scheme).releases_via_key_holder
    except UnknownSchemeError:
        return False


def _committee_size(manifest: RoundManifest) -> int:
    size = manifest.scheme_config.get("committee_size", 1)
    return size if isinstance(size, int) else 1


def _safe_inputs(manifest: RoundManifest, aggregate: bytes) -> tuple[Digest, ...] | None:
    try:
        return aggregate_inputs(manifest, aggregate)
    except (SecAggError, ValueError):
        return None


def round_ids(ledger: Ledger) -> list[int]:
    """Every round opened on the ledger, ascending."""
    return sorted({int(event.args["round"]) for event in ledger.events("RoundOpened")})


def audit(
    ledger: Ledger,
    store: ArtifactStore,
    *,
    round_id: int | None = None,
    epsilon_tolerance: float = DEFAULT_EPSILON_TOLERANCE,
) -> AuditReport:
    """Audit every round of ``ledger`` (or only ``round_id``) against ``store``.

    Returns an :class:`AuditReport` whose :attr:`~AuditReport.exit_code` is 0 (clean),
    1 (findings) or 2 (cannot audit, with the reason in ``cannot_audit``).
    """
    auditor = Auditor(ledger=ledger, store=store, epsilon_tolerance=epsilon_tolerance)
    address = str(ledger.address)
    try:
        chain_id: int | None = ledger.chain_id
        rounds = round_ids(ledger)
        if round_id is not None:
            if round_id not in rounds:
                return AuditReport(
                    ledger_address=address,
                    chain_id=chain_id,
                    rounds=(),
                    findings=(),
                    cannot_audit=f"round {round_id} was never opened on this ledger",
                    epsilon_tolerance=epsilon_tolerance,
                )
            # Earlier rounds are read (not reported) so event chains can be followed.
            rounds = [r for r in rounds if r <= round_id]
        if rounds and not any(ledger.round_info(r).config_digest in store for r in rounds):
            return AuditReport(
                ledger_address=address,
                chain_id=chain_id,
                rounds=(),
                findings=(),
                cannot_audit=f"{store!r} holds no manifest of the ledger's rounds "
                "(an empty or wrong artifact store)",
                epsilon_tolerance=epsilon_tolerance,
            )
        audits = []
        for rid in rounds:
            round_audit, _ = auditor.audit_round(rid)
            if round_id is None or rid == round_id:
                audits.append(round_audit)
        if round_id is not None:
            auditor.findings = [f for f in auditor.findings if f.round_id == round_id]
        elif rounds:
            auditor.check_reputation(rounds[-1])
    except (ChainError, OSError, ConnectionError) as error:
        return AuditReport(
            ledger_address=address,
            chain_id=None,
            rounds=(),
            findings=(),
            cannot_audit=f"cannot read the ledger: {type(error).__name__}: {error}",
            epsilon_tolerance=epsilon_tolerance,
        )
    except Exception as error:  # an audit reports; it never crashes its caller
        return AuditReport(
            ledger_address=address,
            chain_id=None,
            rounds=(),
            findings=(),
            cannot_audit=f"the audit failed unexpectedly: {type(error).__name__}: {error}"[:500],
            epsilon_tolerance=epsilon_tolerance,
        )
    return AuditReport(
        ledger_address=address,
        chain_id=chain_id,
        rounds=tuple(audits),
        findings=tuple(auditor.findings),
        epsilon_tolerance=epsilon_tolerance,
    )


def culprits(findings: Iterable[Finding]) -> dict[tuple[int, str], int]:
    """``(round, client address) -> reason code`` for findings that put a client at fault."""
    out: dict[tuple[int, str], int] = {}
    for finding in findings:
        code = CLIENT_CHECKS.get(finding.check)
        if code is not None and finding.client is not None:
            out.setdefault((finding.round_id, finding.client), code)
    return out
