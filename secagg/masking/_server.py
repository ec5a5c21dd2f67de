"""The server role: one method per stage, each validating every message it receives.

Threat model: without a registry the server is honest-but-curious. With one (client id ->
registered ledger address) the round is the actively secure variant of Bonawitz et al.
2017: advertisements must carry the registered account's signature (the server could not
substitute keys even if it tried: clients check the same signatures), and before any
share is revealed the clients sign the survivor set the server announced
(:meth:`MaskingServer.consistency_requests`, :meth:`consistency_proofs`); the clients'
checks, not this class, are what protect them from a malicious server. This class is the
honest server's side.

Accusations: a client whose neighbour's item does not open reports it. The server asks the
accused to rebut (:meth:`rebuttal_requests`): the accused reveals the ephemeral secret of
that one item, the server recomputes the key and tries the item. If it opens, the reporter
lied (:class:`FalseAccusationError`) and the reporter is excluded, not the accused; if it
does not, or the accused does not answer, the accused is excluded, and its exclusion
reason names the reporter.

In every round the server routes sealed shares it cannot open, sums masked vectors it
cannot unmask alone (streamed: it keeps no client's vector), and in the unmask stage asks
every survivor,
per peer, for *either* the self-mask share (peer sent masked input) *or* the masking-key
share (peer did not, or was excluded), never both; :attr:`MaskingServer.revealed_seeds`
and :attr:`MaskingServer.revealed_keys` record what it reconstructed and never intersect.

Misbehaving clients (malformed or out-of-stage messages, unknown or spoofed ids,
duplicates, masked vectors of the wrong length or type, shares that fail authentication
at their receiver, false accusations) are excluded and recorded in
:attr:`MaskingServer.misbehaving`; the sum of the others is still recovered while every
stage keeps ``t`` clients.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from secagg._errors import DuplicateClientError, EmptyAggregateError, SecAggError
from secagg.masking import _aead, _keys, _shamir
from secagg.masking import _signatures as sig
from secagg.masking._client import (
    check_certificate,
    item_digest,
    pairwise_mask_key,
    self_mask_commitment,
)
from secagg.masking._constants import SERVER_ID, Stage
from secagg.masking._errors import (
    BelowThresholdError,
    FalseAccusationError,
    KeyAuthenticationError,
    MessageFormatError,
    RebuttalError,
    SecretExposureError,
    ShareAuthenticationError,
    ShareReconstructionError,
    StageError,
    UnknownClientError,
)
from secagg.masking._messages import (
    AdvertiseKeys,
    Aggregate,
    ConsistencyProof,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    Header,
    KeysBroadcast,
    MaskedInput,
    PeerKeys,
    Rebuttal,
    RebuttalRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.masking._params import RoundPlan
from secagg.masking._prg import MaskAccumulator
from secagg.masking._quantize import dequantize_sum


@dataclass(frozen=True)
class CombineResult:
    """Outcome of the masked-input stage: the aggregate message and who is in it.

    ``rejected`` maps each included client to the neighbours whose shares it rejected (it
    did not mask with them); the masked vectors themselves are not kept.
    """

    aggregate: bytes
    included: tuple[int, ...]
    misbehaving: dict[int, str]
    rejected: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(repr=False)
class ServerState:
    """What the server remembers within one round."""

    stage: Stage = Stage.ADVERTISE_KEYS
    advertised: dict[int, AdvertiseKeys] = field(default_factory=dict)
    broadcast_to: dict[int, frozenset[int]] = field(default_factory=dict)
    shares: dict[int, ShareKeys] = field(default_factory=dict)
    delivered_to: dict[int, frozenset[int]] = field(default_factory=dict)
    combined: CombineResult | None = None
    responders: dict[int, UnmaskRequest] = field(default_factory=dict)
    responses: dict[int, UnmaskResponse] = field(default_factory=dict)
    misbehaving: dict[int, str] = field(default_factory=dict)
    accusations: dict[tuple[int, int], bytes] = field(default_factory=dict)
    verdicts: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)
    told: dict[int, frozenset[int]] = field(default_factory=dict)
    consistency: dict[int, bytes] = field(default_factory=dict)


def _matches_commitment(commitment: bytes, seed: bytes) -> bool:
    return self_mask_commitment(seed) == commitment


def _matches_public_key(public: bytes, secret: bytes) -> bool:
    return _keys.public_from_secret(secret) == public


def _candidate_sets(points: list[int], threshold: int) -> Iterator[list[int]]:
    """t-subsets to try: the first t, then leaving out each one in turn, then sliding windows.

    With at least t + 1 shares this finds a correct subset whenever one share is bad.
    """
    yield points[:threshold]
    if len(points) == threshold:
        return
    for left_out in points[: threshold + 1]:
        yield [x for x in points if x != left_out][:threshold]
    for start in range(1, len(points) - threshold + 1):
        yield points[start : start + threshold]


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


class MaskingServer:
    """The aggregator of one round; methods take and return serialized messages."""

    def __init__(self, plan: RoundPlan, *, registry: Mapping[int, str] | None = None) -> None:
        self.plan = plan
        self._registry = dict(registry) if registry is not None else None
        self._state = ServerState()
        self.revealed_seeds: set[int] = set()
        self.revealed_keys: set[int] = set()

    # -- helpers ---------------------------------------------------------------------------
    @property
    def stage(self) -> Stage:
        """The stage whose client messages the server accepts now."""
        return self._state.stage

    @property
    def authenticated(self) -> bool:
        """Whether this round runs the actively secure variant (registry given)."""
        return self._registry is not None

    @property
    def accusations(self) -> dict[int, tuple[int, ...]]:
        """Accused client -> the clients that reported its shares (named, never silent)."""
        out: dict[int, list[int]] = {}
        for reporter, accused in sorted(self._state.accusations):
            out.setdefault(accused, []).append(reporter)
        return {accused: tuple(reporters) for accused, reporters in out.items()}

    @property
    def misbehaving(self) -> dict[int, str]:
        """Clients caught misbehaving, with the named error that caught them."""
        return dict(self._state.misbehaving)

    def _header(self) -> Header:
        return Header(self.plan.round_id, self.plan.params_digest, SERVER_ID)

    def _require_stage(self, stage: Stage, what: str) -> None:
        if self._state.stage != stage:
            raise StageError(f"{what} arrived in stage {self._state.stage.name}")

    def _check_sender(self, sender: int, claimed: int, seen: Collection[int]) -> None:
        if sender not in self.plan.neighbours:
            raise UnknownClientError(f"client {sender} is not part of round {self.plan.round_id}")
        if claimed != sender:
            raise UnknownClientError(f"message from client {sender} claims to be from {claimed}")
        if sender in seen:
            raise DuplicateClientError(f"client {sender} sent this stage's message twice")

    def collect(
        self, receive: Callable[[int, bytes], None], messages: Mapping[int, bytes]
    ) -> dict[int, str]:
        """Feed ``messages`` to ``receive``; record and skip the senders whose input is bad."""
        rejected = {}
        for sender in sorted(messages):
            try:
                receive(sender, messages[sender])
            except ValueError as error:
                if not isinstance(error, SecAggError):
                    raise
                rejected[sender] = _reason(error)
                self._state.misbehaving.setdefault(sender, rejected[sender])
        return rejected

    def _require_threshold(self, count: int, what: str) -> None:
        if count < self.plan.threshold:
            raise BelowThresholdError(
                f"only {count} clients {what}, below the threshold t={self.plan.threshold}: "
                "round aborted"
            )

    # -- stage 0: advertise keys -----------------------------------------------------------
    def receive_advertise(self, sender: int, data: bytes) -> None:
        """Validate and store one client's public keys."""
        self._require_stage(Stage.ADVERTISE_KEYS, "advertised keys")
        message = AdvertiseKeys.decode(
            data, round_id=self.plan.round_id, params_digest=self.plan.params_digest
        )
        self._check_sender(sender, message.header.sender, self._state.advertised)
        for key in (message.encryption_key, message.masking_key):
            try:
                _keys.load_public(key)
            except ValueError as error:
                raise MessageFormatError(f"client {sender} advertised a bad key: {error}") from None
        if self._registry is not None:
            check_certificate(self.plan, message, self._registry)
        self._state.advertised[sender] = message

    def broadcast_keys(self) -> dict[int, bytes]:
        """End stage 0: send each advertiser the keys of its advertising neighbours."""
        self._require_stage(Stage.ADVERTISE_KEYS, "broadcast")
        advertised = self._state.advertised
        self._require_threshold(len(advertised), "advertised keys")
        self._state.stage = Stage.SHARE_KEYS
        out = {}
        for client in sorted(advertised):
            peers = sorted(self.plan.neighbours[client] & advertised.keys())
            self._state.broadcast_to[client] = frozenset(peers)
            entries = tuple(PeerKeys.of(advertised[peer]) for peer in peers)
            out[client] = KeysBroadcast(self._header(), client, entries).encode()
        return out

    # -- stage 1: share keys ---------------------------------------------------------------
    def receive_share_keys(self, sender: int, data: bytes) -> None:
        """Validate one client's sealed shares: one per neighbour that got its keys."""
        self._require_stage(Stage.SHARE_KEYS, "shares")
        message = ShareKeys.decode(
            data, round_id=self.plan.round_id, params_digest=self.plan.params_digest
        )
        self._check_sender(sender, message.header.sender, self._state.shares)
        if sender not in self._state.broadcast_to:
            raise StageError(f"client {sender} sent shares without advertising keys")
        receivers = {item.peer for item in message.shares}
        strangers = receivers - self._state.broadcast_to[sender]
        if strangers:
            raise UnknownClientError(
                f"client {sender} addressed shares to non-neighbours {sorted(strangers)}"
            )
        if len(receivers) < self.plan.threshold:
            raise MessageFormatError(
                f"client {sender} shared with {len(receivers)} neighbours, "
                f"below t={self.plan.threshold}: its secrets could not be recovered"
            )
        self._state.shares[sender] = message

    def deliver_shares(self) -> dict[int, bytes]:
        """End stage 1: route each sealed share to its receiver."""
        self._require_stage(Stage.SHARE_KEYS, "share delivery")
        shares = self._state.shares
        self._require_threshold(len(shares), "shared their keys")
        self._state.stage = Stage.MASKED_INPUT
        inbox: dict[int, list] = {client: [] for client in sorted(shares)}
        for sender in sorted(shares):
            for item in shares[sender].shares:
                if item.peer in inbox:
                    inbox[item.peer].append(
                        type(item)(sender, item.ephemeral_key, item.nonce, item.sealed)
                    )
        out = {}
        for receiver, items in inbox.items():
            self._state.delivered_to[receiver] = frozenset(item.peer for item in items)
            out[receiver] = SharesDelivery(self._header(), receiver, tuple(items)).encode()
        return out

    # -- stage 2: masked input -------------------------------------------------------------
    def parse_masked_input(self, sender: int, data: bytes, seen: Collection[int]) -> MaskedInput:
        """Validate one masked vector (length, element type, sender, reported rejections)."""
        message = MaskedInput.decode(
            data,
            round_id=self.plan.round_id,
            params_digest=self.plan.params_digest,
            dim=self.plan.dim,
        )
        self._check_sender(sender, message.header.sender, seen)
        delivered = self._state.delivered_to.get(sender)
        if delivered is None:
            raise StageError(f"client {sender} sent masked input without sharing its keys")
        unknown = set(message.rejected) - delivered
        if unknown:
            raise UnknownClientError(
                f"client {sender} reports shares from {sorted(unknown)} it was never sent"
            )
        if self.authenticated:
            self._check_accusations(message)
        return message

    def _item(self, sender: int, receiver: int) -> EncryptedShares:
        """The sealed item ``sender`` addressed to ``receiver`` (as the server received it)."""
        for item in self._state.shares[sender].shares:
            if item.peer == receiver:
                return item
        raise UnknownClientError(f"client {sender} sent no shares to client {receiver}")

    def _check_accusations(self, message: MaskedInput) -> None:
        """Authenticated rounds: each report must be the reporter's signature on the item."""
        reporter = message.header.sender
        if len(message.accusations) != len(message.rejected):
            raise FalseAccusationError(f"client {reporter} reports neighbours without signing")
        signing_key = self._state.advertised[reporter].signing_key
        for accused, signature in zip(message.rejected, message.accusations, strict=True):
            digest = item_digest(
                self.plan, sender=accused, receiver=reporter, item=self._item(accused, reporter)
            )
            statement = sig.accusation_digest(
                round_id=self.plan.round_id,
                params_digest=self.plan.params_digest,
                reporter=reporter,
                accused=accused,
                item_digest=digest,
            )
            if not sig.verify(signing_key, statement, signature):
                raise FalseAccusationError(
                    f"client {reporter}'s report of client {accused} is not its signature on "
                    "the item it was sent"
                )

    # -- stage 2b: accusations and rebuttals -----------------------------------------------
    def rebuttal_requests(self, blobs: Mapping[int, bytes]) -> dict[tuple[int, int], bytes]:
        """Ask each accused client that sent masked input to rebut, keyed (accused, reporter).

        Call before :meth:`receive_masked_inputs`; an accused that does not rebut is excluded.
        """
        self._require_stage(Stage.MASKED_INPUT, "rebuttal requests")
        reports: dict[int, tuple[tuple[int, ...], tuple[bytes, ...]]] = {}
        for sender in sorted(blobs):
            try:
                message = self.parse_masked_input(sender, blobs[sender], reports)
            except ValueError as error:
                if not isinstance(error, SecAggError):
                    raise
                continue
            reports[sender] = (message.rejected, message.accusations)
        out = {}
        for reporter, (rejected, accusations) in reports.items():
            signatures = accusations or (b"",) * len(rejected)
            for accused, signature in zip(rejected, signatures, strict=True):
                self._state.accusations[(reporter, accused)] = signature
                if accused in reports:
                    request = RebuttalRequest(self._header(), accused, reporter, signature)
                    out[(accused, reporter)] = request.encode()
        return out

    def receive_rebuttal(self, sender: int, data: bytes) -> None:
        """Check one rebuttal: whoever lied (reporter or accused) is recorded as misbehaving."""
        self._require_stage(Stage.MASKED_INPUT, "rebuttal")
        plan = self.plan
        message = Rebuttal.decode(data, round_id=plan.round_id, params_digest=plan.params_digest)
        if message.header.sender != sender:
            raise UnknownClientError(
                f"message from client {sender} claims to be from {message.header.sender}"
            )
        key = (message.reporter, sender)
        if key not in self._state.accusations:
            raise RebuttalError(
                f"client {sender} rebuts an accusation by {message.reporter} nobody made"
            )
        if key in self._state.verdicts:
            raise DuplicateClientError(f"client {sender} rebutted client {message.reporter} twice")
        item = self._item(sender, message.reporter)
        opens = False
        try:
            if _keys.public_from_secret(message.ephemeral_secret) == item.ephemeral_key:
                reporter_key = self._state.advertised[message.reporter].encryption_key
                _aead.open_item(
                    _keys.agree(
                        _keys.load_secret(message.ephemeral_secret),
                        _keys.load_public(reporter_key),
                    ),
                    params_digest=plan.params_digest,
                    round_id=plan.round_id,
                    sender=sender,
                    receiver=message.reporter,
                    ephemeral_public=item.ephemeral_key,
                    nonce=item.nonce,
                    sealed=item.sealed,
                )
                opens = True
        except (ShareAuthenticationError, ValueError):
            opens = False
        if opens:
            self._state.verdicts[key] = (
                message.reporter,
                f"FalseAccusationError: reported client {sender}'s shares as unopenable, but "
                f"they open with the ephemeral key client {sender} revealed",
            )
        else:
            self._state.verdicts[key] = (
                sender,
                f"ShareAuthenticationError: its shares for client {message.reporter} do not "
                f"open with the ephemeral key it revealed (reported by client {message.reporter})",
            )

    def combine(self, blobs: Mapping[int, bytes]) -> CombineResult:
        """Sum the valid masked vectors mod 2^b; a pure function of ``blobs`` and the state.

        For each accusation: the liar per the rebuttal is excluded; without a rebuttal, the
        accused is excluded and its reason names the reporter.
        """
        if self._state.stage not in (Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK):
            raise StageError(f"masked input arrived in stage {self._state.stage.name}")
        if not blobs:
            raise EmptyAggregateError("no masked inputs to combine")
        # Streamed: each vector is added as it is parsed (memory O(dim), not O(n * dim));
        # the few parsed but then excluded (accused, false reporters) are taken back out.
        rejected: dict[int, tuple[int, ...]] = {}
        misbehaving: dict[int, str] = {}
        total = np.zeros(self.plan.dim, dtype=np.uint32)
        for sender in sorted(blobs):
            try:
                message = self.parse_masked_input(sender, blobs[sender], rejected)
            except ValueError as error:
                if not isinstance(error, SecAggError):
                    raise
                misbehaving[sender] = _reason(error)
                continue
            rejected[sender] = message.rejected
            total += message.vector
        for reporter in sorted(rejected):
            for accused in rejected[reporter]:
                culprit, reason = self._state.verdicts.get(
                    (reporter, accused),
                    (
                        accused,
                        f"ShareAuthenticationError: reported by client {reporter} for shares "
                        "that fail authentication, and did not rebut",
                    ),
                )
                misbehaving.setdefault(culprit, reason)
        included = tuple(sorted(set(rejected) - set(misbehaving)))
        self._require_threshold(len(included), "sent valid masked input")
        for client in sorted(set(rejected) - set(included)):
            total -= self._vector(blobs[client])
        total &= np.uint32(self.plan.modulus_mask)
        aggregate = Aggregate(self._header(), included, total).encode()
        return CombineResult(aggregate, included, misbehaving, {c: rejected[c] for c in included})

    def _vector(self, blob: bytes) -> np.ndarray:
        plan = self.plan
        return MaskedInput.decode(
            blob, round_id=plan.round_id, params_digest=plan.params_digest, dim=plan.dim
        ).vector

    def receive_masked_inputs(self, blobs: Mapping[int, bytes]) -> bytes:
        """End stage 2: combine once and remember who is included; returns the aggregate."""
        result = self.combine(blobs)
        if self._state.combined is not None:
            if result.aggregate != self._state.combined.aggregate:
                raise StageError("masked inputs were already combined into another aggregate")
            return result.aggregate
        self._state.combined = result
        for client, reason in result.misbehaving.items():
            self._state.misbehaving.setdefault(client, reason)
        self._state.stage = Stage.CONSISTENCY_CHECK if self.authenticated else Stage.UNMASK
        return result.aggregate

    @property
    def included(self) -> tuple[int, ...]:
        """Clients whose updates are in the sum (empty before combining)."""
        combined = self._state.combined
        return () if combined is None else combined.included

    def _accepted(self, client: int) -> frozenset[int]:
        """Neighbours whose shares ``client`` holds (and masked with)."""
        combined = self._state.combined
        rejected = () if combined is None else combined.rejected[client]
        return self._state.delivered_to[client] - frozenset(rejected)

    def _needed_keys(self) -> set[int]:
        included = set(self.included)
        needed: set[int] = set()
        for client in included:
            needed |= self._accepted(client) - included
        return needed

    # -- stage 3 (authenticated rounds): consistency check ---------------------------------
    def consistency_requests(self, survivors: Collection[int]) -> dict[int, bytes]:
        """Tell each surviving included client the survivor set U3 (the included clients)."""
        self._require_stage(Stage.CONSISTENCY_CHECK, "consistency requests")
        if self._state.told:
            raise StageError("consistency requests were already sent this round")
        strangers = set(survivors) - set(self.plan.client_ids)
        if strangers:
            raise UnknownClientError(f"survivors {sorted(strangers)} are not in this round")
        included = frozenset(self.included)
        out = {}
        for client in sorted(set(survivors) & included):
            self._state.told[client] = included
            out[client] = ConsistencyRequest(
                self._header(), client, tuple(sorted(included))
            ).encode()
        return out

    def receive_consistency(self, sender: int, data: bytes) -> None:
        """Check one survivor's signature on the set it was told."""
        self._require_stage(Stage.CONSISTENCY_CHECK, "consistency signature")
        plan = self.plan
        message = ConsistencySignature.decode(
            data, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_sender(sender, message.header.sender, self._state.consistency)
        told = self._state.told.get(sender)
        if told is None:
            raise UnknownClientError(f"client {sender} was not asked to sign a survivor set")
        statement = sig.consistency_digest(
            round_id=plan.round_id, params_digest=plan.params_digest, signer=sender, survivors=told
        )
        if not sig.verify(self._state.advertised[sender].signing_key, statement, message.signature):
            raise KeyAuthenticationError(
                f"client {sender}'s survivor-set signature does not verify"
            )
        self._state.consistency[sender] = message.signature

    def consistency_proofs(self) -> dict[int, bytes]:
        """Forward every collected signature (and the signers' certificates) to each signer."""
        self._require_stage(Stage.CONSISTENCY_CHECK, "consistency proofs")
        signed = self._state.consistency
        if len(signed) < self.plan.consistency_threshold:
            raise BelowThresholdError(
                f"only {len(signed)} clients signed the survivor set, below the consistency "
                f"threshold {self.plan.consistency_threshold}: round aborted"
            )
        self._state.stage = Stage.UNMASK
        signatures = tuple(sorted(signed.items()))
        out = {}
        for client in sorted(signed):
            known = self._state.broadcast_to.get(client, frozenset()) | {client}
            certificates = tuple(
                PeerKeys.of(self._state.advertised[signer])
                for signer in sorted(signed)
                if signer not in known
            )
            out[client] = ConsistencyProof(
                self._header(), client, signatures, certificates
            ).encode()
        return out

    # -- stage 3: unmask -------------------------------------------------------------------
    def unmask_requests(self, survivors: Collection[int]) -> dict[int, bytes]:
        """Ask each surviving included client for one kind of share per peer it holds."""
        self._require_stage(Stage.UNMASK, "unmask")
        if self._state.responders:
            raise StageError("unmask requests were already sent this round")
        strangers = set(survivors) - set(self.plan.client_ids)
        if strangers:
            raise UnknownClientError(f"survivors {sorted(strangers)} are not in this round")
        included = set(self.included)
        responders = sorted(set(survivors) & included)
        if self.authenticated:  # only clients that vouched for the survivor set answer
            responders = [client for client in responders if client in self._state.consistency]
        needed = self._needed_keys()
        if included & needed:
            raise SecretExposureError("a client would have both secrets reconstructed")
        holders: dict[int, int] = dict.fromkeys(included | needed, 0)
        out = {}
        for responder in responders:
            accepted = self._accepted(responder)
            request = UnmaskRequest(
                self._header(),
                responder,
                tuple(sorted(accepted & included)),
                tuple(sorted(accepted & needed)),
            )
            for owner in (*request.seed_owners, *request.key_owners):
                holders[owner] += 1
            self._state.responders[responder] = request
            out[responder] = request.encode()
        short = {owner: count for owner, count in holders.items() if count < self.plan.threshold}
        if short:
            owner = min(short)
            raise BelowThresholdError(
                f"client {owner} has {short[owner]} online share holders, below the threshold "
                f"t={self.plan.threshold} ({len(short)} clients short): round aborted"
            )
        return out

    def receive_unmask_response(self, sender: int, data: bytes) -> None:
        """Validate one survivor's shares against what it was asked for."""
        self._require_stage(Stage.UNMASK, "unmask response")
        message = UnmaskResponse.decode(
            data, round_id=self.plan.round_id, params_digest=self.plan.params_digest
        )
        self._check_sender(sender, message.header.sender, self._state.responses)
        request = self._state.responders.get(sender)
        if request is None:
            raise UnknownClientError(f"client {sender} was not asked for shares")
        if (
            tuple(owner for owner, _ in message.seed_shares) != request.seed_owners
            or tuple(owner for owner, _ in message.key_shares) != request.key_owners
        ):
            raise UnknownClientError(f"client {sender} answered for other peers than asked")
        for _, share in (*message.seed_shares, *message.key_shares):
            try:
                _shamir.decode_share(share)
            except ValueError as error:
                raise MessageFormatError(f"client {sender} sent a bad share: {error}") from None
        self._state.responses[sender] = message

    def _reconstruct(
        self, owner: int, shares: dict[int, int], check: Callable[[bytes], bool], what: str
    ) -> bytes:
        """Recover a secret from >= t shares; try t-windows until ``check`` accepts it.

        Holders whose share is off the accepted polynomial are recorded as misbehaving.
        """
        threshold = self.plan.threshold
        points = sorted(shares)
        if len(points) < threshold:
            raise BelowThresholdError(
                f"{what} of client {owner}: {len(points)} shares, below t={threshold}"
            )
        for chosen in _candidate_sets(points, threshold):
            window = {x: shares[x] for x in chosen}
            value = _shamir.interpolate_at_zero(window)
            if value >= 2**256:
                continue
            secret = value.to_bytes(32, "big")
            if not check(secret):
                continue
            others = [x for x in points if x not in window]
            expected = _shamir.batch_evaluator(window)(others)
            for x, value in zip(others, expected, strict=True):
                if value != shares[x]:
                    self._state.misbehaving.setdefault(
                        x - 1, f"ShareReconstructionError: bad share of client {owner}"
                    )
            return secret
        raise ShareReconstructionError(f"shares of the {what} of client {owner} are inconsistent")

    def finish(self) -> np.ndarray:
        """End stage 3: remove the masks and return the float sum of the included updates."""
        self._require_stage(Stage.UNMASK, "unmask completion")
        plan, state = self.plan, self._state
        combined = state.combined
        if combined is None:
            raise StageError("nothing was combined")
        seed_shares: dict[int, dict[int, int]] = {owner: {} for owner in combined.included}
        key_shares: dict[int, dict[int, int]] = {owner: {} for owner in self._needed_keys()}
        for holder, response in sorted(state.responses.items()):
            if holder in state.misbehaving:
                continue
            for owner, share in response.seed_shares:
                seed_shares[owner][holder + 1] = _shamir.decode_share(share)
            for owner, share in response.key_shares:
                key_shares[owner][holder + 1] = _shamir.decode_share(share)
        aggregate = Aggregate.decode(
            combined.aggregate,
            round_id=plan.round_id,
            params_digest=plan.params_digest,
            dim=plan.dim,
        )
        total = aggregate.vector.copy()
        masks = MaskAccumulator(plan.dim)
        for owner in combined.included:
            if owner in self.revealed_keys:
                raise SecretExposureError(f"masking key of client {owner} was already revealed")
            seed = self._reconstruct(
                owner,
                seed_shares[owner],
                partial(_matches_commitment, state.advertised[owner].self_mask_commitment),
                "self-mask seed",
            )
            self.revealed_seeds.add(owner)
            masks.add(total, seed, negate=True)
        for owner in sorted(key_shares):
            if owner in self.revealed_seeds:
                raise SecretExposureError(f"self-mask seed of client {owner} was already revealed")
            secret = self._reconstruct(
                owner,
                key_shares[owner],
                partial(_matches_public_key, state.advertised[owner].masking_key),
                "masking key",
            )
            self.revealed_keys.add(owner)
            own = _keys.load_secret(secret)
            for client in combined.included:
                if owner in self._accepted(client):
                    peer_public = _keys.load_public(state.advertised[client].masking_key)
                    key = pairwise_mask_key(
                        _keys.agree(own, peer_public), plan=plan, first=owner, second=client
                    )
                    # the mask ``client`` added for ``owner``: +PRG if client < owner
                    masks.add(total, key, negate=client < owner)
        total &= np.uint32(plan.modulus_mask)
        state.stage = Stage.DONE
        state.shares.clear()  # the routed share items (n * k) are not needed past the round
        return dequantize_sum(total, bits=plan.bits, scale=plan.scale)
