"""The client role: one method per stage (advertise keys, share keys, masked input, unmask).

Threat model for the client: the server is honest-but-curious and may see every message;
other clients may be corrupt. The client therefore (a) seals every share for its receiver
with AES-GCM bound to sender, receiver, round and parameters; (b) masks its input with a
self mask and with a pairwise mask per neighbour whose shares it accepted; (c) in the
unmask stage answers once, and never for the same peer with both the self-mask share and
the masking-key share (:class:`SecretExposureError` otherwise).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from Crypto.Random import get_random_bytes

from secagg._digest import keccak256
from secagg._errors import InvalidUpdateError
from secagg.masking import _aead, _keys, _shamir
from secagg.masking._constants import (
    LABEL_PAIR_MASK,
    LABEL_SELF_COMMIT,
    SECRET_BYTES,
    SHARE_BYTES,
    Stage,
)
from secagg.masking._errors import (
    BelowThresholdError,
    SecretExposureError,
    ShareAuthenticationError,
    StageError,
    UnknownClientError,
)
from secagg.masking._messages import (
    AdvertiseKeys,
    EncryptedShares,
    Header,
    KeysBroadcast,
    MaskedInput,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.masking._params import RoundPlan
from secagg.masking._prg import expand_mask
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


@dataclass(repr=False)
class ClientState:
    """Private state of one client during one round (never serialized)."""

    stage: Stage = Stage.ADVERTISE_KEYS
    encryption: _keys.KeyPair = field(default_factory=_keys.generate_keypair)
    masking: _keys.KeyPair = field(default_factory=_keys.generate_keypair)
    self_seed: bytes = field(default_factory=lambda: get_random_bytes(SECRET_BYTES))
    peer_masking_keys: dict[int, bytes] = field(default_factory=dict)
    channel_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    held_shares: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    rejected: tuple[int, ...] = ()


class MaskingClient:
    """One client of one round; every method takes and returns serialized messages."""

    def __init__(self, plan: RoundPlan, client_id: int) -> None:
        if client_id not in plan.neighbours:
            raise UnknownClientError(f"client {client_id} is not part of round {plan.round_id}")
        self.plan = plan
        self.client_id = client_id
        self.neighbours = plan.neighbours[client_id]
        self._state = ClientState()

    @property
    def stage(self) -> Stage:
        """The stage whose input this client expects next."""
        return self._state.stage

    def _header(self) -> Header:
        return Header(self.plan.round_id, self.plan.params_digest, self.client_id)

    def _enter(self, expected: Stage, following: Stage) -> None:
        if self._state.stage != expected:
            raise StageError(
                f"client {self.client_id} is in stage {self._state.stage.name}, not {expected.name}"
            )
        self._state.stage = following

    def advertise_keys(self) -> bytes:
        """Stage 0: publish both public keys and a commitment to the self-mask seed."""
        self._enter(Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS)
        state = self._state
        return AdvertiseKeys(
            self._header(),
            state.encryption.public,
            state.masking.public,
            self_mask_commitment(state.self_seed),
        ).encode()

    def share_keys(self, broadcast: bytes) -> bytes:
        """Stage 1: Shamir-share the self-mask seed and masking key among the neighbours."""
        plan = self.plan
        message = KeysBroadcast.decode(
            broadcast, round_id=plan.round_id, params_digest=plan.params_digest
        )
        if message.recipient != self.client_id:
            raise UnknownClientError(
                f"keys broadcast for client {message.recipient} reached client {self.client_id}"
            )
        self._enter(Stage.SHARE_KEYS, Stage.MASKED_INPUT)
        state = self._state
        peers = {peer.client_id: peer for peer in message.peers}
        strangers = set(peers) - self.neighbours
        if strangers:
            raise UnknownClientError(
                f"keys broadcast to client {self.client_id} lists non-neighbours "
                f"{sorted(strangers)}"
            )
        if len(peers) < plan.threshold:
            raise BelowThresholdError(
                f"client {self.client_id} has {len(peers)} neighbours with keys, "
                f"below the threshold t={plan.threshold}"
            )
        own_secret = state.encryption.private
        order = sorted(peers)
        points = [peer + 1 for peer in order]
        seed_shares = _shamir.split(state.self_seed, threshold=plan.threshold, points=points)
        key_shares = _shamir.split(state.masking.secret, threshold=plan.threshold, points=points)
        sealed = []
        for peer in order:
            try:
                peer_public = _keys.load_public(peers[peer].encryption_key)
            except ValueError as error:
                raise UnknownClientError(
                    f"neighbour {peer} advertised a bad key: {error}"
                ) from None
            keys = _aead.channel_keys(
                _keys.agree(own_secret, peer_public),
                params_digest=plan.params_digest,
                round_id=plan.round_id,
                first=self.client_id,
                second=peer,
            )
            state.channel_keys[peer] = keys
            state.peer_masking_keys[peer] = peers[peer].masking_key
            plaintext = _shamir.encode_share(seed_shares[peer + 1]) + _shamir.encode_share(
                key_shares[peer + 1]
            )
            nonce, ciphertext = _aead.seal_shares(
                keys[0],
                params_digest=plan.params_digest,
                round_id=plan.round_id,
                sender=self.client_id,
                receiver=peer,
                plaintext=plaintext,
            )
            sealed.append(EncryptedShares(peer, nonce, ciphertext))
        return ShareKeys(self._header(), tuple(sealed)).encode()

    def _open_delivery(self, message: SharesDelivery) -> None:
        plan, state = self.plan, self._state
        rejected = []
        for item in message.shares:
            keys = state.channel_keys.get(item.peer)
            if keys is None:
                raise UnknownClientError(
                    f"client {self.client_id} got shares from {item.peer}, not a neighbour "
                    "that received its keys"
                )
            try:
                plaintext = _aead.open_shares(
                    keys[1],
                    params_digest=plan.params_digest,
                    round_id=plan.round_id,
                    sender=item.peer,
                    receiver=self.client_id,
                    nonce=item.nonce,
                    sealed=item.sealed,
                )
            except ShareAuthenticationError:
                rejected.append(item.peer)
                continue
            state.held_shares[item.peer] = (plaintext[:SHARE_BYTES], plaintext[SHARE_BYTES:])
        state.rejected = tuple(sorted(rejected))

    def masked_input(self, delivery: bytes, update: np.ndarray) -> bytes:
        """Stage 2: accept the neighbours' shares and send the masked, quantized update.

        Shares that fail authentication are rejected and reported; the client does not mask
        with their sender (the server then excludes that sender).
        """
        plan, state = self.plan, self._state
        message = SharesDelivery.decode(
            delivery, round_id=plan.round_id, params_digest=plan.params_digest
        )
        if message.recipient != self.client_id:
            raise UnknownClientError(
                f"shares for client {message.recipient} reached client {self.client_id}"
            )
        values = np.asarray(update)
        if values.ndim != 1 or values.shape[0] != plan.dim:
            raise InvalidUpdateError(
                f"update must be a 1-D vector of length {plan.dim}, got shape {values.shape}"
            )
        if not np.issubdtype(values.dtype, np.floating) or not np.all(np.isfinite(values)):
            raise InvalidUpdateError("update must be a finite floating-point vector")
        self._enter(Stage.MASKED_INPUT, Stage.UNMASK)
        self._open_delivery(message)
        if len(state.held_shares) < plan.threshold:
            raise BelowThresholdError(
                f"client {self.client_id} accepted shares from {len(state.held_shares)} "
                f"neighbours, below the threshold t={plan.threshold}"
            )
        vector = quantize(values, bits=plan.bits, clip_range=plan.clip_range, scale=plan.scale)
        vector += expand_mask(state.self_seed, dim=plan.dim)
        own_secret = state.masking.private
        for peer in sorted(state.held_shares):
            shared = _keys.agree(own_secret, _keys.load_public(state.peer_masking_keys[peer]))
            key = pairwise_mask_key(shared, plan=plan, first=self.client_id, second=peer)
            mask = expand_mask(key, dim=plan.dim)
            if self.client_id < peer:
                vector += mask
            else:
                vector -= mask
        vector &= np.uint32(plan.modulus_mask)
        return MaskedInput(self._header(), state.rejected, vector).encode()

    def unmask(self, request: bytes) -> bytes:
        """Stage 3: reveal, per peer, either its self-mask share or its masking-key share."""
        plan, state = self.plan, self._state
        message = UnmaskRequest.decode(
            request, round_id=plan.round_id, params_digest=plan.params_digest
        )
        if message.recipient != self.client_id:
            raise UnknownClientError(
                f"unmask request for client {message.recipient} reached client {self.client_id}"
            )
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
        self._enter(Stage.UNMASK, Stage.DONE)
        return UnmaskResponse(
            self._header(),
            tuple((owner, state.held_shares[owner][0]) for owner in message.seed_owners),
            tuple((owner, state.held_shares[owner][1]) for owner in message.key_owners),
        ).encode()
