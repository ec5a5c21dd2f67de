"""A malicious masking server attacks honest clients; the ledger registry is the PKI.

Each test plays the server by hand with real protocol messages (the honest
:class:`MaskingServer` is used only where the attacker would behave honestly) against real
:class:`MaskingClient` objects whose ledger accounts are registered on the consortium
contract in the in-process EVM. Each attack must fail before any secret leaves a client,
and honest rounds (with dropouts) must still complete.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from eth_account import Account

from chain import InProcessBackend
from secagg._consortium import Consortium
from secagg._store import LocalDirectoryStore
from secagg.masking import (
    ConsistencyCheckError,
    ConsistencyProof,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAuthenticationError,
    KeysBroadcast,
    MaskedInput,
    MaskingClient,
    MaskingParams,
    MaskingScheme,
    MaskingServer,
    RebuttalError,
    RebuttalRequest,
    SharesDelivery,
    StageError,
    UnmaskRequest,
    ledger_registry,
    plan_round,
)
from secagg.masking import _signatures as sig
from secagg.masking._client import advertisement_digest_of
from secagg.masking._constants import SERVER_ID, Stage
from secagg.masking._keys import generate_keypair
from secagg.masking._messages import EncryptedShares, Header, PeerKeys

N, DIM = 8, 10
PARAMS = MaskingParams(graph="complete", max_dropout_fraction=0.3)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    store = LocalDirectoryStore(tmp_path_factory.mktemp("store"))
    return Consortium.create(InProcessBackend(), n_clients=N, store=store, epsilon_budget=10.0)


@pytest.fixture
def registry(consortium: Consortium) -> dict[int, str]:
    """Client id -> address, each checked to hold the CLIENT role on the contract."""
    return ledger_registry(consortium.ledger, {c: consortium.address_of(c) for c in range(N)})


class Attack:
    """Honest clients and a server whose messages the test may rewrite at each stage."""

    def __init__(self, consortium: Consortium, registry: dict[int, str]) -> None:
        self.plan = plan_round(PARAMS, round_id=9, client_ids=range(N), dim=DIM)
        self.server = MaskingServer(self.plan, registry=registry)
        self.clients = {
            c: MaskingClient(self.plan, c, account=consortium.account_of(c), registry=registry)
            for c in range(N)
        }
        rng = np.random.default_rng(4)  # test data only
        self.updates = {c: rng.uniform(-0.1, 0.1, DIM) for c in range(N)}
        self.header = Header(self.plan.round_id, self.plan.params_digest, SERVER_ID)

    def decode(self, cls, data: bytes):  # type: ignore[no-untyped-def]
        return cls.decode(data, round_id=self.plan.round_id, params_digest=self.plan.params_digest)

    def broadcasts(self) -> dict[int, bytes]:
        adverts = {c: client.advertise_keys() for c, client in self.clients.items()}
        self.server.collect(self.server.receive_advertise, adverts)
        return self.server.broadcast_keys()

    def masked(self) -> bytes:
        broadcasts = self.broadcasts()
        uploads = {c: self.clients[c].share_keys(b) for c, b in broadcasts.items()}
        self.server.collect(self.server.receive_share_keys, uploads)
        deliveries = self.server.deliver_shares()
        blobs = {c: self.clients[c].masked_input(d, self.updates[c]) for c, d in deliveries.items()}
        return self.server.receive_masked_inputs(blobs)


@pytest.mark.parametrize("forgery", ["keep_signature", "unsigned", "server_signs", "peer_signs"])
def test_server_cannot_substitute_a_neighbours_keys(consortium, registry, forgery: str) -> None:
    attack = Attack(consortium, registry)
    broadcasts = attack.broadcasts()
    server_keys = generate_keypair()  # the server wants client 0 to encrypt 3's shares to it
    original = attack.decode(KeysBroadcast, broadcasts[0])
    peers = []
    for peer in original.peers:
        if peer.client_id == 3:
            peer = dataclasses.replace(
                peer, encryption_key=server_keys.public, masking_key=server_keys.public
            )
            if forgery in ("server_signs", "peer_signs"):
                account = (
                    Account.create() if forgery == "server_signs" else consortium.account_of(5)
                )
                digest = advertisement_digest_of(attack.plan, peer)
                peer = dataclasses.replace(peer, signature=sig.sign_with_account(account, digest))
        if forgery == "unsigned":  # a broadcast without any signatures
            peer = PeerKeys(peer.client_id, peer.encryption_key, peer.masking_key)
        peers.append(peer)
    message = KeysBroadcast(original.header, 0, tuple(peers)).encode()
    match = "not signed" if forgery == "unsigned" else "keys of client 3 are not signed by"
    with pytest.raises(KeyAuthenticationError, match=match):
        attack.clients[0].share_keys(message)
    # Nothing was sent, and the untouched broadcast of another client still works.
    assert attack.clients[0]._state.sent_items == {}
    attack.clients[1].share_keys(broadcasts[1])


def test_honest_server_rejects_a_client_advertising_under_another_account(
    consortium, registry
) -> None:
    attack = Attack(consortium, registry)
    attack.clients[2]._account = consortium.account_of(6)  # signs as a different client
    adverts = {c: client.advertise_keys() for c, client in attack.clients.items()}
    rejected = attack.server.collect(attack.server.receive_advertise, adverts)
    assert set(rejected) == {2} and "KeyAuthenticationError" in rejected[2]


def test_unregistered_address_is_not_in_the_pki(consortium) -> None:
    stranger = Account.create()
    with pytest.raises(KeyAuthenticationError, match="not a registered client"):
        ledger_registry(consortium.ledger, {0: consortium.address_of(0), 1: stranger.address})


# -- consistency check ----------------------------------------------------------------------
def _sign_sets(attack: Attack, told: dict[int, tuple[int, ...]]) -> dict[int, bytes]:
    return {
        c: attack.clients[c].sign_survivors(
            ConsistencyRequest(attack.header, c, survivors).encode()
        )
        for c, survivors in told.items()
    }


def _signatures(attack: Attack, signed: dict[int, bytes]) -> dict[int, bytes]:
    return {c: attack.decode(ConsistencySignature, data).signature for c, data in signed.items()}


def _no_share_left(attack: Attack, clients) -> None:  # type: ignore[no-untyped-def]
    for c in clients:
        assert attack.clients[c].stage == Stage.CONSISTENCY_CHECK
        others = tuple(peer for peer in range(N) if peer != c)
        request = UnmaskRequest(attack.header, c, others, ()).encode()
        with pytest.raises(StageError):
            attack.clients[c].unmask(request)


def test_server_telling_clients_different_survivor_sets_gets_no_shares(
    consortium, registry
) -> None:
    """Half are told 7 survived (seed shares of 7), half that it dropped (key shares of 7)."""
    attack = Attack(consortium, registry)
    attack.masked()
    everyone, without_seven = tuple(range(N)), tuple(range(N - 1))
    told = {c: everyone for c in range(4)} | {c: without_seven for c in range(4, 7)}
    signatures = _signatures(attack, _sign_sets(attack, told))
    group_one = {c: s for c, s in signatures.items() if c < 4}
    group_two = {c: s for c, s in signatures.items() if c >= 4}
    assert len(group_one) < attack.plan.consistency_threshold
    # (a) Each group sees only the signatures on its own set: too few.
    for group in (group_one, group_two):
        for c in group:
            proof = ConsistencyProof(attack.header, c, tuple(sorted(group.items()))).encode()
            with pytest.raises(ConsistencyCheckError, match="below the consistency threshold"):
                attack.clients[c].check_consistency(proof)
    # (b) Everybody sees every signature: the other set's signatures do not verify.
    fresh = Attack(consortium, registry)
    fresh.masked()
    signatures = _signatures(fresh, _sign_sets(fresh, told))
    for c in told:
        proof = ConsistencyProof(fresh.header, c, tuple(sorted(signatures.items()))).encode()
        with pytest.raises(ConsistencyCheckError, match=r"equivocated|not a survivor"):
            fresh.clients[c].check_consistency(proof)
    # (c) Skipping the check altogether: no client answers an unmask request.
    _no_share_left(attack, told)
    _no_share_left(fresh, told)


def test_forged_or_stale_consistency_signatures_are_refused(consortium, registry) -> None:
    attack = Attack(consortium, registry)
    attack.masked()
    everyone = tuple(range(N))
    signatures = _signatures(attack, _sign_sets(attack, {c: everyone for c in range(N)}))
    forged = dict(signatures)
    forged[5] = signatures[6]  # 6's signature passed off as 5's
    proof = ConsistencyProof(attack.header, 0, tuple(sorted(forged.items()))).encode()
    with pytest.raises(ConsistencyCheckError, match="client 5"):
        attack.clients[0].check_consistency(proof)
    missing_own = {c: s for c, s in signatures.items() if c != 1}
    proof = ConsistencyProof(attack.header, 1, tuple(sorted(missing_own.items()))).encode()
    with pytest.raises(ConsistencyCheckError, match="its own signature"):
        attack.clients[1].check_consistency(proof)


def test_unmask_request_contradicting_the_agreed_set_is_refused(consortium, registry) -> None:
    attack = Attack(consortium, registry)
    attack.masked()
    server = attack.server
    signed = {
        c: attack.clients[c].sign_survivors(r)
        for c, r in server.consistency_requests(range(N)).items()
    }
    server.collect(server.receive_consistency, signed)
    for c, proof in server.consistency_proofs().items():
        attack.clients[c].check_consistency(proof)
    # Client 7 is in the agreed set: asking for its masking-key share is refused ...
    greedy = UnmaskRequest(attack.header, 0, (1, 2), (7,)).encode()
    with pytest.raises(ConsistencyCheckError, match="contradicts the agreed survivor set"):
        attack.clients[0].unmask(greedy)
    # ... while the honest request is answered, and the round completes.
    requests = server.unmask_requests(range(N))
    responses = {c: attack.clients[c].unmask(r) for c, r in requests.items()}
    server.collect(server.receive_unmask_response, responses)
    result = server.finish()
    assert np.max(np.abs(result - np.sum(list(attack.updates.values()), axis=0))) < 1e-6


def test_honest_authenticated_round_with_dropouts_completes(consortium, registry) -> None:
    accounts = {c: consortium.account_of(c) for c in range(N)}
    session = MaskingScheme(PARAMS).start_round(
        round_id=4, client_ids=range(N), dim=DIM, accounts=accounts, registry=registry
    )
    session.setup(dropouts=[1])
    rng = np.random.default_rng(5)
    updates = {c: rng.uniform(-0.1, 0.1, DIM) for c in range(N)}
    blobs = {c: session.protect(c, updates[c]) for c in range(N) if c not in (1, 2)}
    result = session.reveal(session.combine(blobs), survivors=[c for c in blobs if c != 3])
    assert set(session.excluded) == {1, 2} and 3 in session.included
    expected = np.sum([updates[c] for c in session.included], axis=0)
    assert np.max(np.abs(result - expected)) < 1e-6


# -- rebuttals cannot be abused to pull shares out of an honest client ---------------------
def test_forged_accusation_gets_no_rebuttal(consortium, registry) -> None:
    attack = Attack(consortium, registry)
    attack.masked()
    for signature in (b"", bytes(64)):
        forged = RebuttalRequest(attack.header, 2, 5, signature).encode()
        with pytest.raises(RebuttalError, match="refusing to reveal"):
            attack.clients[2].rebut(forged)


def test_item_altered_in_transit_gets_no_rebuttal(consortium, registry) -> None:
    """The server garbles 2's item for 5; 5 reports it (signed), but 2 sees it is not its item."""
    attack = Attack(consortium, registry)
    broadcasts = attack.broadcasts()
    uploads = {c: attack.clients[c].share_keys(b) for c, b in broadcasts.items()}
    attack.server.collect(attack.server.receive_share_keys, uploads)
    deliveries = attack.server.deliver_shares()
    message = attack.decode(SharesDelivery, deliveries[5])
    garbled = tuple(
        EncryptedShares(i.peer, i.ephemeral_key, i.nonce, bytes(len(i.sealed)))
        if i.peer == 2
        else i
        for i in message.shares
    )
    deliveries[5] = SharesDelivery(message.header, 5, garbled).encode()

    blob = attack.clients[5].masked_input(deliveries[5], attack.updates[5])
    plan = attack.plan
    report = MaskedInput.decode(
        blob, round_id=plan.round_id, params_digest=plan.params_digest, dim=DIM
    )
    assert report.rejected == (2,)
    attack.clients[2].masked_input(deliveries[2], attack.updates[2])
    request = RebuttalRequest(attack.header, 2, 5, report.accusations[0]).encode()
    with pytest.raises(RebuttalError, match="refusing to reveal"):
        attack.clients[2].rebut(request)
