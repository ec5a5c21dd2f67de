"""Authenticated rounds (ledger accounts as PKI) and verifiable accusations between clients."""

from __future__ import annotations

import numpy as np
import pytest
from eth_account import Account

from secagg.masking import (
    KeyAuthenticationError,
    MaskingClient,
    MaskingParameterError,
    MaskingParams,
    MaskingScheme,
    MaskingSession,
    Stage,
    plan_round,
)
from secagg.masking import _signatures as sig
from secagg.masking._client import item_digest
from secagg.masking._messages import EncryptedShares, SharesDelivery

DIM = 16


def _session(n: int, params: MaskingParams, *, authenticated: bool) -> MaskingSession:
    ids = list(range(100, 100 + n))
    accounts = {c: Account.create() for c in ids} if authenticated else None
    return MaskingScheme(params).start_round(round_id=3, client_ids=ids, dim=DIM, accounts=accounts)


def _updates(session: MaskingSession, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only; never used for masks
    return {c: rng.uniform(-1, 1, DIM) / 20 for c in session.plan.client_ids}


def _expected(session: MaskingSession, updates: dict[int, np.ndarray]) -> np.ndarray:
    return np.sum([updates[c] for c in session.included], axis=0)


def test_authenticated_sparse_round_with_dropouts_at_every_stage_completes() -> None:
    session = _session(12, MaskingParams(max_dropout_fraction=0.3), authenticated=True)
    plan = session.plan
    assert not plan.complete  # signers outside a neighbourhood need forwarded certificates
    # k - t = 3 neighbours may be lost: three dropouts, at three different stages.
    session.setup(advertise_dropouts=[100])
    updates = _updates(session)
    blobs = {c: session.protect(c, updates[c]) for c in plan.client_ids if c not in {100, 102}}
    aggregate = session.combine(blobs)
    survivors = [c for c in blobs if c != 103]
    result = session.reveal(aggregate, survivors=survivors)
    assert set(session.excluded) == {100, 102}
    assert 103 in session.included  # sent masked input, then dropped: still in the sum
    assert np.max(np.abs(result - _expected(session, updates))) <= 12 / plan.scale
    server = session.server
    assert server.authenticated and server.revealed_seeds.isdisjoint(server.revealed_keys)
    assert all(session.clients[c].stage == Stage.DONE for c in survivors)
    assert session.stats.bytes_down["reveal"] > 0


def test_too_few_signers_of_the_survivor_set_aborts_before_any_share() -> None:
    from secagg.masking import BelowThresholdError

    session = _session(12, MaskingParams(max_dropout_fraction=0.3), authenticated=True)
    session.setup()
    updates = _updates(session)
    aggregate = session.combine(
        {c: session.protect(c, updates[c]) for c in session.plan.client_ids}
    )
    few = list(session.plan.client_ids)[: session.plan.consistency_threshold - 1]
    with pytest.raises(BelowThresholdError, match="consistency threshold"):
        session.reveal(aggregate, survivors=few)
    assert session.server.revealed_seeds == set() and session.server.revealed_keys == set()
    assert all(session.clients[c].stage == Stage.CONSISTENCY_CHECK for c in few)


def test_account_and_registry_must_match() -> None:
    plan = plan_round(MaskingParams(), round_id=1, client_ids=range(4), dim=4)
    account, other = Account.create(), Account.create()
    with pytest.raises(MaskingParameterError, match="together"):
        MaskingClient(plan, 0, account=account)
    with pytest.raises(MaskingParameterError, match="registered address"):
        MaskingClient(plan, 0, account=account, registry={0: other.address})
    with pytest.raises(MaskingParameterError, match="no ledger account"):
        MaskingScheme().start_round(round_id=1, client_ids=range(4), dim=4, accounts={0: account})


def test_server_rejects_an_advertisement_not_signed_by_the_registered_account() -> None:
    session = _session(
        8, MaskingParams(graph="complete", max_dropout_fraction=0.3), authenticated=True
    )
    impostor = Account.create()
    victim = session.clients[104]
    victim._account = impostor  # the client's advert is now signed by an unregistered key
    session.setup()
    assert "KeyAuthenticationError" in session.server.misbehaving[104]
    assert 104 in session.excluded


# -- accusations ------------------------------------------------------------------------------
def _accuse_falsely(session: MaskingSession, reporter: int, accused: int) -> None:
    """Make ``reporter`` claim that ``accused``'s (valid) shares did not open, signing it."""
    client = session.clients[reporter]
    original = client._open_delivery

    def lying_open(message: SharesDelivery) -> None:
        original(message)
        state = client._state
        item = next(i for i in message.shares if i.peer == accused)
        del state.held_shares[accused]
        state.rejected = (*state.rejected, accused)
        if state.signing is not None:
            digest = item_digest(session.plan, sender=accused, receiver=reporter, item=item)
            statement = sig.accusation_digest(
                round_id=session.plan.round_id,
                params_digest=session.plan.params_digest,
                reporter=reporter,
                accused=accused,
                item_digest=digest,
            )
            state.accusations = (*state.accusations, sig.sign(state.signing, statement))

    client._open_delivery = lying_open  # type: ignore[method-assign]


def _garble_shares(session: MaskingSession, sender: int, receiver: int) -> None:
    """Make ``sender`` seal garbage for ``receiver`` (and stand by it: it records the item)."""
    client = session.clients[sender]
    original = client.share_keys

    def garbling_share_keys(broadcast: bytes) -> bytes:
        from secagg.masking._messages import ShareKeys

        data = original(broadcast)
        plan = session.plan
        message = ShareKeys.decode(data, round_id=plan.round_id, params_digest=plan.params_digest)
        items = []
        for item in message.shares:
            if item.peer == receiver:
                item = EncryptedShares(
                    item.peer, item.ephemeral_key, item.nonce, bytes(len(item.sealed))
                )
                digest = item_digest(plan, sender=sender, receiver=receiver, item=item)
                client._state.sent_items[receiver] = (digest, client._state.sent_items[receiver][1])
            items.append(item)
        return ShareKeys(message.header, tuple(items)).encode()

    client.share_keys = garbling_share_keys  # type: ignore[method-assign]


@pytest.mark.parametrize("authenticated", [False, True])
def test_false_accusation_excludes_the_reporter_not_the_accused(authenticated: bool) -> None:
    params = MaskingParams(graph="complete", max_dropout_fraction=0.3)
    session = _session(8, params, authenticated=authenticated)
    reporter, accused = 102, 105
    _accuse_falsely(session, reporter, accused)
    session.setup()
    updates = _updates(session, seed=1)
    blobs = {c: session.protect(c, updates[c]) for c in session.plan.client_ids}
    result = session.reveal(session.combine(blobs), survivors=list(blobs))
    assert session.accusations == {accused: (reporter,)}
    assert accused in session.included
    assert "FalseAccusationError" in session.excluded[reporter]
    assert f"client {accused}" in session.excluded[reporter]
    assert set(session.excluded) == {reporter}
    assert np.max(np.abs(result - _expected(session, updates))) <= 8 / session.plan.scale
    server = session.server
    assert reporter not in server.revealed_seeds  # excluded: only its masking key is rebuilt
    assert server.revealed_seeds.isdisjoint(server.revealed_keys)


@pytest.mark.parametrize("authenticated", [False, True])
def test_honest_accusation_excludes_the_accused_and_names_the_reporter(
    authenticated: bool,
) -> None:
    params = MaskingParams(graph="complete", max_dropout_fraction=0.3)
    session = _session(8, params, authenticated=authenticated)
    sender, reporter = 106, 101
    _garble_shares(session, sender, reporter)
    session.setup()
    updates = _updates(session, seed=2)
    blobs = {c: session.protect(c, updates[c]) for c in session.plan.client_ids}
    result = session.reveal(session.combine(blobs), survivors=list(blobs))
    assert session.clients[reporter].rejected == (sender,)
    assert session.accusations == {sender: (reporter,)}
    assert set(session.excluded) == {sender}
    reason = session.excluded[sender]
    assert "ShareAuthenticationError" in reason and "ephemeral key it revealed" in reason
    assert f"reported by client {reporter}" in reason
    assert reporter in session.included  # the honest reporter loses nothing
    assert np.max(np.abs(result - _expected(session, updates))) <= 8 / session.plan.scale


def test_accused_that_does_not_rebut_is_excluded_and_its_reporter_named() -> None:
    params = MaskingParams(graph="complete", max_dropout_fraction=0.3)
    session = _session(8, params, authenticated=True)
    reporter, accused = 103, 104
    _accuse_falsely(session, reporter, accused)

    def silent(request: bytes) -> bytes:
        raise KeyAuthenticationError("offline")  # a named refusal: the accused stays silent

    session.clients[accused].rebut = silent  # type: ignore[method-assign]
    session.setup()
    updates = _updates(session, seed=3)
    blobs = {c: session.protect(c, updates[c]) for c in session.plan.client_ids}
    result = session.reveal(session.combine(blobs), survivors=list(blobs))
    assert set(session.excluded) == {accused}
    assert f"reported by client {reporter}" in session.excluded[accused]
    assert "did not rebut" in session.excluded[accused]
    assert np.max(np.abs(result - _expected(session, updates))) <= 8 / session.plan.scale
