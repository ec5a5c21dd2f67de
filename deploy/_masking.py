"""Pairwise masking (``secagg=masking``) over a deployment: the driver's side and the
hospital's side of the masking stages (docs/formats.md 11, ``secagg.v1.mask.*``).

The driver runs the :class:`~secagg.masking.MaskingServer` inside a
:class:`RemoteMaskingSession` (a :class:`~secagg.RoundSession` whose clients are remote
sites): advertise keys and share keys before ``train``; each hospital's masked input is
its ``train`` blob, committed on the ledger by the hospital itself and revealed after the
commit phase closed; ``combine`` asks accused hospitals to rebut, then sums; ``reveal``
runs the consistency check and the unmask stage. A hospital that does not answer a stage
in time is a dropout of that stage, which masking recovers (its pairwise masks, or its
self mask, are reconstructed from the others' shares) while ``t`` of its neighbours answer.

Each hospital runs its own :class:`~secagg.masking.MaskingClient` in
:class:`MaskingStages`; its private keys and held shares stay on its node: between
messages they live in the site's memory or, on Flower SuperNodes (a fresh process per
message), in the node's own ``Context.state`` (:meth:`MaskingStages.export_state`), never
in a message or a log. Rounds are authenticated (Bonawitz et al. 2017 against a malicious
server): every hospital signs its advertised keys with its ledger account and checks the
others' against the ledger's registry, as in the runner.

Threat model: as :mod:`secagg.masking` (the aggregator learns only the sum of the
included updates; fewer than ``t`` of any client's neighbours collude with it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from deploy._errors import DeploymentError, WireFormatError
from deploy._transport import Exchange, Transport
from deploy._wire import (
    MASK_ADVERTISE,
    MASK_CONSISTENCY,
    MASK_REBUT,
    MASK_SHARE,
    MASK_UNMASK,
    Scalar,
    WireMessage,
)
from secagg import EmptyAggregateError, RoundManifest, RoundSession, SecAggError
from secagg.masking import MaskingClient, MaskingParams, MaskingServer, RoundPlan, plan_round
from secagg.masking._constants import Stage
from secagg.masking._errors import StageError

#: ``send(type, fields by client, phase)`` -> the replies by client and why others gave none.
Send = Callable[[str, Mapping[int, Mapping[str, Scalar]], str], Exchange]


def masking_plan(manifest: RoundManifest) -> RoundPlan:
    """The round plan every party derives from the manifest's public parameters."""
    try:
        params = MaskingParams.from_schema(SimpleNamespace(**manifest.scheme_config))
    except (AttributeError, TypeError) as error:
        raise DeploymentError(f"the manifest's masking parameters are unusable: {error}") from error
    return plan_round(
        params,
        round_id=manifest.round_id,
        client_ids=[c.client_id for c in manifest.clients],
        dim=manifest.dim,
    )


def exchange_each(
    transport: Transport,
    nodes: Mapping[int, int],
    message_type: str,
    fields: Mapping[int, Mapping[str, Scalar]],
    *,
    timeout: float,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> Exchange:
    """One message per client (its own fields) over ``transport``; replies by client id.
    ``nodes`` maps client id -> node id."""
    requests = {
        nodes[client]: WireMessage(message_type, fields=dict(values), arrays=dict(arrays or {}))
        for client, values in fields.items()
    }
    client_of = {nodes[client]: client for client in fields}
    exchange = transport.exchange(requests, timeout=timeout)
    return Exchange(
        replies={client_of[n]: r for n, r in exchange.replies.items()},
        failures={client_of[n]: why for n, why in exchange.failures.items()},
    )


class RemoteMaskingSession(RoundSession):
    """The aggregator's masking session over remote clients (see the module docstring).

    ``send`` delivers one stage's messages (:data:`Send`); ``dropped`` records, per client,
    the first stage it did not answer and why. Bytes per stage are counted in
    :attr:`stats` as masking messages (up: client to server)."""

    def __init__(
        self,
        plan: RoundPlan,
        *,
        send: Send,
        registry: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(round_id=plan.round_id, client_ids=plan.client_ids, dim=plan.dim)
        self.plan = plan
        self.server = MaskingServer(plan, registry=registry)
        self.send = send
        self.dropped: dict[int, str] = {}
        self.combined: tuple[int, ...] = ()
        self._aggregate: bytes | None = None

    def send_stage(
        self,
        message_type: str,
        messages: Mapping[int, Mapping[str, Scalar]],
        phase: str,
        reason: str,
    ) -> dict[int, bytes]:
        """Send one stage; returns each answering client's masking message."""
        fields = {c: {"round": self.plan.round_id, **values} for c, values in messages.items()}
        self.stats.bytes_down[phase] += sum(
            len(v) for values in messages.values() for v in values.values() if isinstance(v, bytes)
        )
        exchange = self.send(message_type, fields, phase)
        out: dict[int, bytes] = {}
        for client, why in exchange.failures.items():
            self.dropped.setdefault(client, f"{reason}: {why}")
        for client, reply in exchange.replies.items():
            try:
                out[client] = reply.blob("message")
            except WireFormatError as error:
                self.dropped.setdefault(client, f"{reason}: {error}")
        self.stats.bytes_up[phase] += sum(map(len, out.values()))
        return out

    def run_setup(
        self,
        request: Mapping[str, Scalar],
        *,
        own: Mapping[int, Mapping[str, Scalar]] | None = None,
    ) -> dict[int, bytes]:
        """Advertise keys, then share keys; returns each client's shares delivery (what its
        ``train`` message carries). ``request``: the fields of the advertise message
        (``own``: fields added for one client)."""
        server = self.server
        own = own or {}
        with self.stats.timed("setup"):
            adverts = self.send_stage(
                MASK_ADVERTISE,
                {c: {**request, **own.get(c, {})} for c in self.plan.client_ids},
                "setup",
                "dropped before advertising keys",
            )
            server.collect(server.receive_advertise, adverts)
            broadcasts = server.broadcast_keys()
            uploads = self.send_stage(
                MASK_SHARE,
                {c: {"message": m} for c, m in broadcasts.items()},
                "setup",
                "dropped before sharing keys",
            )
            server.collect(server.receive_share_keys, uploads)
            return server.deliver_shares()

    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        raise DeploymentError("the aggregator's masking session protects nothing (sites do)")

    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        """Rebuttals of accused clients, then the modular sum of the valid masked inputs."""
        if not blobs:
            raise EmptyAggregateError("no masked inputs to combine")
        server = self.server
        with self.stats.timed("combine"):
            if self._aggregate is not None:
                return server.combine(blobs).aggregate
            requests = server.rebuttal_requests(blobs)
            while requests:  # one request per accused client and message
                wave: dict[int, bytes] = {}
                for (accused, reporter), request in sorted(requests.items()):
                    if accused not in wave:
                        wave[accused] = request
                        del requests[(accused, reporter)]
                rebuttals = self.send_stage(
                    MASK_REBUT,
                    {c: {"message": m} for c, m in wave.items()},
                    "combine",
                    "no rebuttal",
                )
                server.collect(server.receive_rebuttal, rebuttals)
            self._aggregate = server.receive_masked_inputs(blobs)
            self.combined = server.included
            return self._aggregate

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        """The consistency check (authenticated rounds), then the unmask stage; the
        survivors that do not answer are dropouts the others' shares recover."""
        if self._aggregate is None or bytes(aggregate) != self._aggregate:
            raise DeploymentError("reveal of an aggregate this session did not combine")
        server = self.server
        with self.stats.timed("reveal"):
            extra: dict[int, dict[str, Scalar]] = {}
            if server.authenticated:
                requests = server.consistency_requests(survivors)
                signatures = self.send_stage(
                    MASK_CONSISTENCY,
                    {c: {"message": m} for c, m in requests.items()},
                    "reveal",
                    "no survivor-set signature",
                )
                server.collect(server.receive_consistency, signatures)
                proofs = server.consistency_proofs()
                extra = {c: {"proof": p} for c, p in proofs.items()}
                survivors = sorted(proofs)
            unmask = server.unmask_requests(survivors)
            responses = self.send_stage(
                MASK_UNMASK,
                {c: {"message": m, **extra.get(c, {})} for c, m in unmask.items()},
                "reveal",
                "no unmask response",
            )
            server.collect(server.receive_unmask_response, responses)
            return server.finish()


class MaskingStages:
    """A hospital's masking client across the stage messages of one round at a time.

    ``account``: the hospital's ledger account (signs its key advertisement). The client
    lives in memory; :meth:`export_state` / :meth:`restore_state` carry it across fresh
    processes on the hospital's own node."""

    def __init__(self, account: LocalAccount) -> None:
        self.account = account
        self.round_id: int | None = None
        self._manifest: bytes = b""
        self._client_id = -1
        self._registry: dict[int, str] = {}
        self._client: MaskingClient | None = None
        self._saved: bytes | None = None

    def begin(
        self,
        manifest: RoundManifest,
        manifest_bytes: bytes,
        *,
        client_id: int,
        registry: Mapping[int, str],
    ) -> bytes:
        """Stage 0 of a new round: a fresh client, its signed key advertisement. Once per
        round, rounds in order: a second advertisement would let the server pair one
        round's shares with two key sets (:class:`StageError` instead)."""
        if self.round_id is not None and manifest.round_id <= self.round_id:
            raise StageError(
                f"round {manifest.round_id}: this hospital already advertised keys for "
                f"round {self.round_id}"
            )
        self.round_id = manifest.round_id
        self._manifest = manifest_bytes
        self._client_id = client_id
        self._registry = dict(registry)
        self._saved = None
        self._client = MaskingClient(
            masking_plan(manifest), client_id, account=self.account, registry=self._registry
        )
        return self._client.advertise_keys()

    def client(self, round_id: int) -> MaskingClient:
        """This round's client (restored from the saved state in a fresh process)."""
        if self.round_id != round_id:
            raise DeploymentError(f"round {round_id}: this hospital holds no masking keys")
        if self._client is None:
            if self._saved is None:
                raise DeploymentError(f"round {round_id}: the masking state is gone")
            plan = masking_plan(RoundManifest.from_bytes(self._manifest))
            self._client = MaskingClient.restore(
                plan, self._client_id, self._saved, account=self.account, registry=self._registry
            )
            self._saved = None
        return self._client

    def handle(self, message: WireMessage) -> WireMessage:
        """One stage message after advertise: share keys, rebut, sign, unmask."""
        client = self.client(message.integer("round"))
        data = message.blob("message")
        if message.type == MASK_SHARE:
            reply = client.share_keys(data)
        elif message.type == MASK_REBUT:
            reply = client.rebut(data)
        elif message.type == MASK_CONSISTENCY:
            reply = client.sign_survivors(data)
        elif message.type == MASK_UNMASK:
            if client.authenticated:
                client.check_consistency(message.blob("proof"))
            reply = client.unmask(data)
        else:
            raise DeploymentError(f"not a masking stage: {message.type}")
        return WireMessage(message.type, fields={"message": reply})

    def masked_input(self, round_id: int, delivery: bytes, update: np.ndarray) -> bytes:
        return self.client(round_id).masked_input(delivery, update)

    def export_state(self) -> dict[str, Scalar]:
        """The round's client state (private keys and held shares: this node only)."""
        if self.round_id is None:
            return {}
        done = self._client is not None and self._client.stage == Stage.DONE
        saved = self._client.export_state() if self._client is not None else self._saved
        if done or saved is None:  # the round's secrets end with its unmask stage
            return {"mask.round": self.round_id}
        return {
            "mask.round": self.round_id,
            "mask.manifest": self._manifest,
            "mask.client": self._client_id,
            "mask.registry": json.dumps({str(c): a for c, a in self._registry.items()}),
            "mask.state": saved,
        }

    def restore_state(self, state: Mapping[str, Scalar]) -> None:
        """Take up :meth:`export_state`'s fields (a fresh process; kept if in memory)."""
        if "mask.round" not in state:
            return
        saved = WireMessage(MASK_SHARE, fields=dict(state))
        round_id = saved.integer("mask.round")
        if self.round_id is not None and self.round_id >= round_id:
            return  # in memory already
        self.round_id = round_id
        if "mask.state" not in state:
            return
        self._manifest = saved.blob("mask.manifest")
        self._client_id = saved.integer("mask.client")
        self._registry = {
            int(c): str(a) for c, a in json.loads(saved.text("mask.registry")).items()
        }
        self._client = None
        self._saved = saved.blob("mask.state")


class MaskedInputSession(RoundSession):
    """What a hospital's :class:`~secagg.ClientParty` protects with in a masking round:
    its masked input, from this round's shares delivery."""

    def __init__(self, stages: MaskingStages, plan: RoundPlan, delivery: bytes) -> None:
        super().__init__(round_id=plan.round_id, client_ids=plan.client_ids, dim=plan.dim)
        self.stages = stages
        self.delivery = delivery

    def protect(self, client_id: int, update: np.ndarray) -> bytes:
        values = self.check_update(update)
        with self.stats.timed("protect"):
            blob = self.stages.masked_input(self.round_id, self.delivery, values)
        self.stats.bytes_up["protect"] += len(blob)
        return blob

    def combine(self, blobs: Mapping[int, bytes]) -> bytes:
        raise DeploymentError("a hospital does not combine")

    def reveal(self, aggregate: bytes, *, survivors: Collection[int]) -> np.ndarray:
        raise DeploymentError("a hospital does not reveal a sum")


def transport_send(transport: Transport, nodes: Mapping[int, int], *, timeout: float) -> Send:
    """A :data:`Send` over ``transport`` (``nodes``: client id -> node id)."""

    def send(message_type: str, fields: Mapping[int, Mapping[str, Scalar]], phase: str) -> Exchange:
        return exchange_each(transport, nodes, message_type, fields, timeout=timeout)

    return send


def open_masking_session(
    manifest: RoundManifest,
    *,
    ledger: Any,
    transport: Transport,
    nodes: Mapping[int, int],
    timeout: float,
    request: Mapping[str, Scalar],
    excluded: dict[int, str],
) -> tuple[RemoteMaskingSession, dict[int, bytes]]:
    """The driver's session of a masking round after its setup stages, and each
    client's shares delivery (clients without one are in ``excluded``, with why). The
    registry of the authenticated round is the ledger's (every client must hold the
    CLIENT role). A setup below the threshold aborts the round: no deliveries."""
    from secagg.masking import ledger_registry

    addresses = {c.client_id: c.address for c in manifest.clients}
    session = RemoteMaskingSession(
        masking_plan(manifest),
        registry=ledger_registry(ledger, addresses),
        send=transport_send(transport, nodes, timeout=timeout),
    )
    try:
        deliveries = session.run_setup(request)
    except SecAggError as error:
        deliveries = {}
        for client in addresses:
            excluded.setdefault(client, f"round aborted in setup: {type(error).__name__}: {error}")
    for client, why in session.dropped.items():
        excluded.setdefault(client, why)
    return session, deliveries


__all__ = [
    "MaskedInputSession",
    "MaskingStages",
    "RemoteMaskingSession",
    "exchange_each",
    "masking_plan",
    "open_masking_session",
    "transport_send",
]
