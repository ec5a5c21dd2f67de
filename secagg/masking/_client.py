"""The client role: one method per stage (advertise keys, share keys, masked input, unmask).

Threat model for the client: other clients may be corrupt and, in authenticated rounds
(the client has a ledger account and the registry of client addresses), so may the server.
The client therefore

(a) seals every share for its receiver under a fresh ephemeral X25519 key, AES-GCM bound
    to sender, receiver, round and parameters (:mod:`._aead`);
(b) masks its input with a self mask and a pairwise mask per neighbour whose shares it
    accepted;
(c) in authenticated rounds signs its key advertisement with its ledger account and
    refuses neighbour keys that the neighbour's registered account did not sign (the
    server cannot substitute keys), signs each accusation of a neighbour, rebuts an
    accusation only when the reporter signed the very item it sent, and answers the
    unmask stage only after the consistency check: at least
    ``plan.consistency_threshold`` valid signatures on the survivor set it was told,
    its own included, and a request that matches that set;
(d) answers the unmask stage once, and never for the same peer with both the self-mask
    share and the masking-key share (:class:`SecretExposureError` otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from Crypto.Random import get_random_bytes
from eth_account.signers.local import LocalAccount

from secagg._digest import keccak256
from secagg._errors import InvalidUpdateError
from secagg.masking import _aead, _keys, _shamir
from secagg.masking import _signatures as sig
from secagg.masking._constants import (
    LABEL_PAIR_MASK,
    LABEL_SELF_COMMIT,
    SECRET_BYTES,
    SHARE_BYTES,
    Stage,
)
from secagg.masking._errors import (
    BelowThresholdError,
    ConsistencyCheckError,
    KeyAuthenticationError,
    MaskingParameterError,
    RebuttalError,
    SecretExposureError,
    ShareAuthenticationError,
    StageError,
    UnknownClientError,
)
from secagg.masking._messages import (
    AdvertiseKeys,
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
from secagg.masking._prg import MaskAccumulator, expand_mask
from secagg.masking._quantize import quantize


def self_mask_commitment(seed: bytes) -> bytes:
    """Public commitment to a self-mask seed (keccak256 of a labelled 256-bit secret)."""
    return bytes(keccak256(LABEL_SELF_COMMIT + seed))


def pairwise_mask_key(shared: bytes, *, plan: RoundPlan, first: int, second: int) -> bytes:
    """AES key of the pairwise mask of clients ``first`` and ``second`` (order-independent)."""
    low, high = sorted((first, second))
    info = LABEL_PAIR_MASK + struct.pack("<QQQ", plan.round_id, low, high)
    return _keys.hkdf(shared, salt=plan.params_digest, info=info)


def pairwise_mask(owner: int, peer: int, key: bytes, *, dim: int) -> np.ndarray:
    """The mask ``owner`` adds for ``peer``: +PRG if owner < peer, else -PRG (mod 2^32)."""
    mask = expand_mask(key, dim=dim)
    return mask if owner < peer else np.negative(mask)


def advertisement_digest_of(plan: RoundPlan, peer: PeerKeys | AdvertiseKeys) -> bytes:
    """The digest a client's ledger account signs, from its advert or its broadcast entry."""
    client = peer.client_id if isinstance(peer, PeerKeys) else peer.header.sender
    return sig.advertisement_digest(
        round_id=plan.round_id,
        params_digest=plan.params_digest,
        client_id=client,
        encryption_key=peer.encryption_key,
        masking_key=peer.masking_key,
        self_mask_commitment=peer.self_mask_commitment,
        signing_key=peer.signing_key,
    )


def check_certificate(
    plan: RoundPlan, peer: PeerKeys | AdvertiseKeys, registry: Mapping[int, str]
) -> None:
    """Raise :class:`KeyAuthenticationError` unless the registered account signed ``peer``."""
    client = peer.client_id if isinstance(peer, PeerKeys) else peer.header.sender
    address = registry.get(client)
    if address is None:
        raise KeyAuthenticationError(f"client {client} has no registered ledger account")
    if not peer.signature:
        raise KeyAuthenticationError(f"keys of client {client} are not signed")
    signer = sig.recover_account(advertisement_digest_of(plan, peer), peer.signature)
    if not sig.same_address(signer, address):
        raise KeyAuthenticationError(
            f"keys of client {client} are not signed by its registered account {address}"
        )


def item_digest(plan: RoundPlan, *, sender: int, receiver: int, item: EncryptedShares) -> bytes:
    """Digest of a sealed share item from ``sender`` to ``receiver``."""
    return sig.share_item_digest(
        round_id=plan.round_id,
        params_digest=plan.params_digest,
        sender=sender,
        receiver=receiver,
        ephemeral_key=item.ephemeral_key,
        nonce=item.nonce,
        sealed=item.sealed,
    )


#: The label of :meth:`MaskingClient.export_state`'s format (docs/formats.md 4.2).
STATE_FORMAT = "secagg/masking/client-state/v1"


@dataclass(repr=False)
class ClientState:
    """Private state of one client during one round.

    Serialized only by :meth:`MaskingClient.export_state`, for the client's own node (a
    deployment keeps it between stage messages in the node's local state); never sent."""

    stage: Stage = Stage.ADVERTISE_KEYS
    encryption: _keys.KeyPair = field(default_factory=_keys.generate_keypair)
    masking: _keys.KeyPair = field(default_factory=_keys.generate_keypair)
    self_seed: bytes = field(default_factory=lambda: get_random_bytes(SECRET_BYTES))
    signing: sig.SigningKey | None = None
    peers: dict[int, PeerKeys] = field(default_factory=dict)
    sent_items: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    held_shares: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    rejected: tuple[int, ...] = ()
    accusations: tuple[bytes, ...] = ()
    survivors: frozenset[int] | None = None
    consistency_signature: bytes = b""


def _keypair(secret_hex: str) -> _keys.KeyPair:
    secret = bytes.fromhex(secret_hex)
    private = _keys.load_secret(secret)
    return _keys.KeyPair(
        secret=secret, public=private.public_key().public_bytes_raw(), private=private
    )


def _state_from(document: dict[str, Any]) -> ClientState:
    """The :class:`ClientState` of an exported document (checked by its caller)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signing = None
    if document["signing"]:
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(document["signing"]))
        signing = sig.SigningKey(public=private.public_key().public_bytes_raw(), private=private)
    peers = {
        int(entry[0]): PeerKeys(int(entry[0]), *(bytes.fromhex(v) for v in entry[1:]))
        for entry in document["peers"]
    }
    survivors = document["survivors"]
    seed = bytes.fromhex(document["self_seed"])
    if len(seed) != SECRET_BYTES:
        raise ValueError(f"the self-mask seed must be {SECRET_BYTES} bytes")
    return ClientState(
        stage=Stage(int(document["stage"])),
        encryption=_keypair(document["encryption"]),
        masking=_keypair(document["masking"]),
        self_seed=seed,
        signing=signing,
        peers=peers,
        sent_items={int(p): (bytes.fromhex(d), bytes.fromhex(e)) for p, d, e in document["sent"]},
        held_shares={int(p): (bytes.fromhex(a), bytes.fromhex(b)) for p, a, b in document["held"]},
        rejected=tuple(int(p) for p in document["rejected"]),
        accusations=tuple(bytes.fromhex(a) for a in document["accusations"]),
        survivors=None if survivors is None else frozenset(int(c) for c in survivors),
        consistency_signature=bytes.fromhex(document["consistency_signature"]),
    )


class MaskingClient:
    """One client of one round; every method takes and returns serialized messages.

    With ``account`` (its ledger account) and ``registry`` (client id -> registered
    address, read from the ledger) the client runs the actively secure variant; without
    them, the honest-but-curious one.
    """

    def __init__(
        self,
        plan: RoundPlan,
        client_id: int,
        *,
        account: LocalAccount | None = None,
        registry: Mapping[int, str] | None = None,
    ) -> None:
        if client_id not in plan.neighbours:
            raise UnknownClientError(f"client {client_id} is not part of round {plan.round_id}")
        if (account is None) != (registry is None):
            raise MaskingParameterError("account and registry must be given together")
        if (
            account is not None
            and registry is not None
            and not sig.same_address(registry.get(client_id), str(account.address))
        ):
            raise MaskingParameterError(
                f"the account of client {client_id} is not its registered address"
            )
        self.plan = plan
        self.client_id = client_id
        self.neighbours = plan.neighbours[client_id]
        self._account = account
        self._registry = dict(registry) if registry is not None else None
        self._state = ClientState()

    @property
    def authenticated(self) -> bool:
        """Whether this client runs the actively secure variant."""
        return self._registry is not None

    def export_state(self) -> bytes:
        """This client's round state (its private keys and held shares included), for its
        own node only: a deployment whose stages run in fresh processes keeps it in the
        node's local state between messages. Never send or log it. Format: UTF-8 JSON,
        bytes as hex, labelled :data:`STATE_FORMAT` (docs/formats.md 4.2)."""
        state = self._state
        signing = b""
        if state.signing is not None:
            signing = state.signing.private.private_bytes_raw()
        document = {
            "format": STATE_FORMAT,
            "round": self.plan.round_id,
            "params_digest": self.plan.params_digest.hex(),
            "client": self.client_id,
            "stage": int(state.stage),
            "encryption": state.encryption.secret.hex(),
            "masking": state.masking.secret.hex(),
            "self_seed": state.self_seed.hex(),
            "signing": signing.hex(),
            "peers": [
                [
                    peer.client_id,
                    peer.encryption_key.hex(),
                    peer.masking_key.hex(),
                    peer.self_mask_commitment.hex(),
                    peer.signing_key.hex(),
                    peer.signature.hex(),
                ]
                for peer in state.peers.values()
            ],
            "sent": [[p, d.hex(), e.hex()] for p, (d, e) in state.sent_items.items()],
            "held": [[p, a.hex(), b.hex()] for p, (a, b) in state.held_shares.items()],
            "rejected": list(state.rejected),
            "accusations": [a.hex() for a in state.accusations],
            "survivors": None if state.survivors is None else sorted(state.survivors),
            "consistency_signature": state.consistency_signature.hex(),
        }
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def restore(
        cls,
        plan: RoundPlan,
        client_id: int,
        state: bytes,
        *,
        account: LocalAccount | None = None,
        registry: Mapping[int, str] | None = None,
    ) -> MaskingClient:
        """The client :meth:`export_state` saved, for the same ``plan`` and ``client_id``
        (another round, parameter set or client is a :class:`MaskingParameterError`, as is
        a malformed state)."""
        client = cls(plan, client_id, account=account, registry=registry)
        try:
            document = json.loads(state)
            if document.get("format") != STATE_FORMAT:
                raise MaskingParameterError(f"not a {STATE_FORMAT} document")
            if (
                document["round"] != plan.round_id
                or bytes.fromhex(document["params_digest"]) != plan.params_digest
                or document["client"] != client_id
            ):
                raise MaskingParameterError(
                    f"the saved state is not client {client_id}'s in round {plan.round_id} "
                    "under these parameters"
                )
            client._state = _state_from(document)
        except MaskingParameterError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise MaskingParameterError(f"malformed client state: {error}") from None
        restored = client._state
        if restored.stage > Stage.ADVERTISE_KEYS and client.authenticated != (
            restored.signing is not None
        ):
            raise MaskingParameterError("the saved state's authentication differs from this")
        return client

    @property
    def stage(self) -> Stage:
        """The stage whose input this client expects next."""
        return self._state.stage

    @property
    def rejected(self) -> tuple[int, ...]:
        """Neighbours whose shares failed to open here (reported in the masked input)."""
        return self._state.rejected

    def _header(self) -> Header:
        return Header(self.plan.round_id, self.plan.params_digest, self.client_id)

    def _enter(self, expected: Stage, following: Stage) -> None:
        if self._state.stage != expected:
            raise StageError(
                f"client {self.client_id} is in stage {self._state.stage.name}, not {expected.name}"
            )
        self._state.stage = following

    def _check_recipient(self, recipient: int, what: str) -> None:
        if recipient != self.client_id:
            raise UnknownClientError(
                f"{what} for client {recipient} reached client {self.client_id}"
            )

    def advertise_keys(self) -> bytes:
        """Stage 0: publish both public keys and a commitment to the self-mask seed.

        Authenticated: also a fresh round signing key, all signed by the ledger account.
        """
        self._enter(Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS)
        state = self._state
        advert = AdvertiseKeys(
            self._header(),
            state.encryption.public,
            state.masking.public,
            self_mask_commitment(state.self_seed),
        )
        if self._account is None:
            return advert.encode()
        state.signing = sig.generate_signing_key()
        unsigned = AdvertiseKeys(
            advert.header,
            advert.encryption_key,
            advert.masking_key,
            advert.self_mask_commitment,
            state.signing.public,
        )
        signature = sig.sign_with_account(
            self._account, advertisement_digest_of(self.plan, unsigned)
        )
        return dataclasses.replace(unsigned, signature=signature).encode()

    def share_keys(self, broadcast: bytes) -> bytes:
        """Stage 1: Shamir-share the self-mask seed and masking key among the neighbours.

        Authenticated: every neighbour's keys must carry its registered account's signature,
        else :class:`KeyAuthenticationError` and nothing is sent (the server substituted keys).
        """
        plan = self.plan
        message = KeysBroadcast.decode(
            broadcast, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_recipient(message.recipient, "keys broadcast")
        self._enter(Stage.SHARE_KEYS, Stage.MASKED_INPUT)
        state = self._state
        peers = {peer.client_id: peer for peer in message.peers}
        strangers = set(peers) - self.neighbours
        if strangers:
            raise UnknownClientError(
                f"keys broadcast to client {self.client_id} lists non-neighbours "
                f"{sorted(strangers)}"
            )
        if self._registry is not None:
            for entry in peers.values():
                check_certificate(plan, entry, self._registry)
        if len(peers) < plan.threshold:
            raise BelowThresholdError(
                f"client {self.client_id} has {len(peers)} neighbours with keys, "
                f"below the threshold t={plan.threshold}"
            )
        order = sorted(peers)
        points = [peer + 1 for peer in order]
        seed_shares, key_shares = _shamir.split_many(
            [state.self_seed, state.masking.secret], threshold=plan.threshold, points=points
        )
        sealed = []
        for peer in order:
            try:
                peer_public = _keys.load_public(peers[peer].encryption_key)
            except ValueError as error:
                raise UnknownClientError(
                    f"neighbour {peer} advertised a bad key: {error}"
                ) from None
            ephemeral = _keys.generate_keypair()
            key = _aead.item_key(
                _keys.agree(ephemeral.private, peer_public),
                params_digest=plan.params_digest,
                round_id=plan.round_id,
                sender=self.client_id,
                receiver=peer,
                ephemeral_public=ephemeral.public,
            )
            plaintext = _shamir.encode_share(seed_shares[peer + 1]) + _shamir.encode_share(
                key_shares[peer + 1]
            )
            nonce, ciphertext = _aead.seal_shares(
                key,
                params_digest=plan.params_digest,
                round_id=plan.round_id,
                sender=self.client_id,
                receiver=peer,
                plaintext=plaintext,
            )
            item = EncryptedShares(peer, ephemeral.public, nonce, ciphertext)
            # Only signed accusations name an item by its digest (authenticated rounds).
            digest = (
                item_digest(plan, sender=self.client_id, receiver=peer, item=item)
                if self.authenticated
                else b""
            )
            state.sent_items[peer] = (digest, ephemeral.secret)
            state.peers[peer] = peers[peer]
            sealed.append(item)
        return ShareKeys(self._header(), tuple(sealed)).encode()

    def _open_delivery(self, message: SharesDelivery) -> None:
        plan, state = self.plan, self._state
        rejected, accusations = [], []
        for item in message.shares:
            if item.peer not in state.peers:
                raise UnknownClientError(
                    f"client {self.client_id} got shares from {item.peer}, not a neighbour "
                    "that received its keys"
                )
            try:
                plaintext = _aead.open_item(
                    _keys.agree(state.encryption.private, _keys.load_public(item.ephemeral_key)),
                    params_digest=plan.params_digest,
                    round_id=plan.round_id,
                    sender=item.peer,
                    receiver=self.client_id,
                    ephemeral_public=item.ephemeral_key,
                    nonce=item.nonce,
                    sealed=item.sealed,
                )
            except (ShareAuthenticationError, ValueError):
                rejected.append(item.peer)
                if state.signing is not None:
                    digest = sig.accusation_digest(
                        round_id=plan.round_id,
                        params_digest=plan.params_digest,
                        reporter=self.client_id,
                        accused=item.peer,
                        item_digest=item_digest(
                            plan, sender=item.peer, receiver=self.client_id, item=item
                        ),
                    )
                    accusations.append(sig.sign(state.signing, digest))
                continue
            state.held_shares[item.peer] = (plaintext[:SHARE_BYTES], plaintext[SHARE_BYTES:])
        order = sorted(range(len(rejected)), key=rejected.__getitem__)
        state.rejected = tuple(rejected[i] for i in order)
        state.accusations = tuple(accusations[i] for i in order) if accusations else ()

    def masked_input(self, delivery: bytes, update: np.ndarray) -> bytes:
        """Stage 2: accept the neighbours' shares and send the masked, quantized update.

        Shares that fail authentication are rejected and reported (signed, in authenticated
        rounds); the client does not mask with their sender. The server then asks the
        accused to rebut (:meth:`rebut`) and excludes whichever of the two lied.
        """
        plan, state = self.plan, self._state
        message = SharesDelivery.decode(
            delivery, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_recipient(message.recipient, "shares")
        values = np.asarray(update)
        if values.ndim != 1 or values.shape[0] != plan.dim:
            raise InvalidUpdateError(
                f"update must be a 1-D vector of length {plan.dim}, got shape {values.shape}"
            )
        if not np.issubdtype(values.dtype, np.floating) or not np.all(np.isfinite(values)):
            raise InvalidUpdateError("update must be a finite floating-point vector")
        following = Stage.CONSISTENCY_CHECK if self.authenticated else Stage.UNMASK
        self._enter(Stage.MASKED_INPUT, following)
        self._open_delivery(message)
        if len(state.held_shares) < plan.threshold:
            raise BelowThresholdError(
                f"client {self.client_id} accepted shares from {len(state.held_shares)} "
                f"neighbours, below the threshold t={plan.threshold}"
            )
        vector = quantize(values, bits=plan.bits, clip_range=plan.clip_range, scale=plan.scale)
        masks = MaskAccumulator(plan.dim)
        masks.add(vector, state.self_seed)
        own_secret = state.masking.private
        for peer in sorted(state.held_shares):
            shared = _keys.agree(own_secret, _keys.load_public(state.peers[peer].masking_key))
            key = pairwise_mask_key(shared, plan=plan, first=self.client_id, second=peer)
            masks.add(vector, key, negate=self.client_id > peer)
        vector &= np.uint32(plan.modulus_mask)
        return MaskedInput(self._header(), state.rejected, vector, state.accusations).encode()

    def rebut(self, request: bytes) -> bytes:
        """Answer an accusation: reveal the ephemeral secret of the item sealed for the reporter.

        That secret opens this one item only, whose shares the reporter already received.
        Authenticated: only if the reporter signed the digest of exactly the item this client
        sent (else :class:`RebuttalError`: the server forged the report or altered the item
        in transit, and revealing would hand it a share it never had).
        """
        plan, state = self.plan, self._state
        message = RebuttalRequest.decode(
            request, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_recipient(message.recipient, "rebuttal request")
        if state.stage not in (Stage.CONSISTENCY_CHECK, Stage.UNMASK):
            raise StageError(
                f"rebuttal request reached client {self.client_id} in stage {state.stage.name}"
            )
        sent = state.sent_items.get(message.reporter)
        if sent is None:
            raise UnknownClientError(
                f"client {self.client_id} sent no shares to client {message.reporter}"
            )
        digest, ephemeral_secret = sent
        if self.authenticated:
            statement = sig.accusation_digest(
                round_id=plan.round_id,
                params_digest=plan.params_digest,
                reporter=message.reporter,
                accused=self.client_id,
                item_digest=digest,
            )
            reporter_key = state.peers[message.reporter].signing_key
            if not sig.verify(reporter_key, statement, message.accusation):
                raise RebuttalError(
                    f"the accusation by client {message.reporter} is not its signature on the "
                    f"item client {self.client_id} sent: refusing to reveal anything"
                )
        return Rebuttal(self._header(), message.reporter, ephemeral_secret).encode()

    def sign_survivors(self, request: bytes) -> bytes:
        """Consistency check, step 1: sign the survivor set U3 the server announced."""
        plan, state = self.plan, self._state
        message = ConsistencyRequest.decode(
            request, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_recipient(message.recipient, "consistency request")
        self._require(Stage.CONSISTENCY_CHECK, "consistency request")
        if state.signing is None:
            raise StageError(f"client {self.client_id} is not in an authenticated round")
        if state.survivors is not None:
            raise StageError(f"client {self.client_id} already signed a survivor set")
        survivors = frozenset(message.survivors)
        if self.client_id not in survivors:
            raise ConsistencyCheckError(
                f"survivor set sent to client {self.client_id} leaves it out"
            )
        strangers = survivors - set(plan.client_ids)
        if strangers:
            raise UnknownClientError(f"survivor set names non-clients {sorted(strangers)}")
        if len(survivors) < plan.consistency_threshold:
            raise ConsistencyCheckError(
                f"survivor set of {len(survivors)} clients is below the consistency threshold "
                f"{plan.consistency_threshold}"
            )
        state.survivors = survivors
        state.consistency_signature = sig.sign(
            state.signing,
            sig.consistency_digest(
                round_id=plan.round_id,
                params_digest=plan.params_digest,
                signer=self.client_id,
                survivors=survivors,
            ),
        )
        return ConsistencySignature(self._header(), state.consistency_signature).encode()

    def check_consistency(self, proof: bytes) -> None:
        """Consistency check, step 2: require ``consistency_threshold`` signatures on our set.

        The proof forwards the signed advertisements of signers that are not neighbours;
        each is checked against the registry (neighbours' were checked in share keys). Any
        signature that does not verify on this client's own survivor set is evidence that
        the server equivocated: :class:`ConsistencyCheckError`, and this client reveals
        nothing.
        """
        plan, state = self.plan, self._state
        message = ConsistencyProof.decode(
            proof, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_recipient(message.recipient, "consistency proof")
        self._require(Stage.CONSISTENCY_CHECK, "consistency proof")
        survivors, registry = state.survivors, self._registry
        if survivors is None or registry is None:
            raise StageError(f"client {self.client_id} has not signed a survivor set")
        signatures = dict(message.signatures)
        certificates = {peer.client_id: peer for peer in message.certificates}
        if signatures.get(self.client_id) != state.consistency_signature:
            raise ConsistencyCheckError(
                f"the proof sent to client {self.client_id} lacks its own signature"
            )
        valid = 0
        # Neighbours first: their certificates were already checked in share keys.
        for signer in sorted(signatures, key=lambda s: (s not in state.peers, s)):
            if valid >= plan.consistency_threshold:
                break
            if signer not in survivors:
                raise ConsistencyCheckError(f"client {signer} signed but is not a survivor")
            if signer == self.client_id:
                valid += 1
                continue
            certificate = state.peers.get(signer) or certificates.get(signer)
            if certificate is None:
                raise ConsistencyCheckError(f"no certified signing key of client {signer}")
            if signer not in state.peers:
                try:
                    check_certificate(plan, certificate, registry)
                except KeyAuthenticationError as error:
                    raise ConsistencyCheckError(str(error)) from None
            statement = sig.consistency_digest(
                round_id=plan.round_id,
                params_digest=plan.params_digest,
                signer=signer,
                survivors=survivors,
            )
            if not sig.verify(certificate.signing_key, statement, signatures[signer]):
                raise ConsistencyCheckError(
                    f"client {signer}'s signature is not on the survivor set client "
                    f"{self.client_id} was told: the server equivocated"
                )
            valid += 1
        if valid < plan.consistency_threshold:
            raise ConsistencyCheckError(
                f"{valid} signatures on the survivor set, below the consistency threshold "
                f"{plan.consistency_threshold}: client {self.client_id} reveals nothing"
            )
        state.stage = Stage.UNMASK

    def _require(self, stage: Stage, what: str) -> None:
        if self._state.stage != stage:
            raise StageError(
                f"{what} reached client {self.client_id} in stage {self._state.stage.name}"
            )

    def unmask(self, request: bytes) -> bytes:
        """Stage 3: reveal, per peer, either its self-mask share or its masking-key share.

        Authenticated: only after the consistency check, and only seed shares of clients in
        the agreed survivor set and key shares of clients outside it.
        """
        plan, state = self.plan, self._state
        message = UnmaskRequest.decode(
            request, round_id=plan.round_id, params_digest=plan.params_digest
        )
        self._check_recipient(message.recipient, "unmask request")
        if state.stage == Stage.DONE:  # its shares are gone: it answers once per round
            raise StageError(f"client {self.client_id} already answered the unmask stage")
        if self.authenticated:
            self._require(Stage.UNMASK, "unmask request")
        both = set(message.seed_owners) & set(message.key_owners)
        if both:
            raise SecretExposureError(
                f"client {self.client_id} refuses to reveal both secrets of {sorted(both)}"
            )
        unknown = (set(message.seed_owners) | set(message.key_owners)) - set(state.held_shares)
        if unknown:
            raise UnknownClientError(
                f"client {self.client_id} holds no accepted shares of {sorted(unknown)}"
            )
        if self.authenticated:
            survivors = state.survivors or frozenset()
            if not set(message.seed_owners) <= survivors or set(message.key_owners) & survivors:
                raise ConsistencyCheckError(
                    f"unmask request to client {self.client_id} contradicts the agreed survivor set"
                )
        self._enter(Stage.UNMASK, Stage.DONE)
        response = UnmaskResponse(
            self._header(),
            tuple((owner, state.held_shares[owner][0]) for owner in message.seed_owners),
            tuple((owner, state.held_shares[owner][1]) for owner in message.key_owners),
        ).encode()
        # Per-pair secrets end with the round: neighbours' shares, ephemeral item secrets.
        state.held_shares.clear()
        state.sent_items.clear()
        return response
