"""A masking client's state survives export and restore between every stage (what a
deployment's fresh per-message processes need), and a state is refused in another round,
for another client or when malformed."""

from __future__ import annotations

import numpy as np
import pytest
from eth_account import Account

from secagg.masking import (
    MaskingClient,
    MaskingParameterError,
    MaskingParams,
    MaskingServer,
    plan_round,
)

DIM = 64


def _round(*, authenticated: bool, dropout_before_input: int | None = None):
    params = MaskingParams(graph="complete", max_dropout_fraction=0.3)
    plan = plan_round(params, round_id=3, client_ids=range(6), dim=DIM)
    accounts = {c: Account.create() for c in plan.client_ids} if authenticated else None
    registry = {c: str(a.address) for c, a in accounts.items()} if accounts else None
    server = MaskingServer(plan, registry=registry)
    saved: dict[int, bytes] = {}

    def client(c: int) -> MaskingClient:
        return MaskingClient.restore(
            plan,
            c,
            saved[c],
            account=None if accounts is None else accounts[c],
            registry=registry,
        )

    def each(clients, call):
        out = {}
        for c in clients:
            party = client(c)
            out[c] = call(party)
            saved[c] = party.export_state()
        return out

    for c in plan.client_ids:
        fresh = MaskingClient(
            plan, c, account=None if accounts is None else accounts[c], registry=registry
        )
        saved[c] = fresh.export_state()
    adverts = each(plan.client_ids, lambda p: p.advertise_keys())
    server.collect(server.receive_advertise, adverts)
    broadcasts = server.broadcast_keys()
    uploads = each(broadcasts, lambda p: p.share_keys(broadcasts[p.client_id]))
    server.collect(server.receive_share_keys, uploads)
    deliveries = server.deliver_shares()
    rng = np.random.default_rng(7)
    updates = {c: rng.uniform(-0.1, 0.1, DIM) for c in plan.client_ids}
    senders = [c for c in deliveries if c != dropout_before_input]
    blobs = each(senders, lambda p: p.masked_input(deliveries[p.client_id], updates[p.client_id]))
    server.receive_masked_inputs(blobs)
    survivors = sorted(blobs)
    if authenticated:
        requests = server.consistency_requests(survivors)
        signatures = each(requests, lambda p: p.sign_survivors(requests[p.client_id]))
        server.collect(server.receive_consistency, signatures)
        proofs = server.consistency_proofs()
        each(proofs, lambda p: p.check_consistency(proofs[p.client_id]))
        survivors = sorted(proofs)
    unmask = server.unmask_requests(survivors)
    responses = each(unmask, lambda p: p.unmask(unmask[p.client_id]))
    server.collect(server.receive_unmask_response, responses)
    total = server.finish()
    expected = sum(updates[c] for c in senders)
    return plan, server, total, expected, saved, accounts, registry


@pytest.mark.parametrize("authenticated", [False, True])
def test_a_client_restored_before_every_stage_gives_the_exact_sum(authenticated):
    plan, server, total, expected, *_ = _round(authenticated=authenticated)
    assert server.included == plan.client_ids
    assert np.max(np.abs(total - expected)) <= len(plan.client_ids) / plan.scale


def test_a_dropout_before_its_masked_input_is_recovered_across_restores():
    plan, server, total, expected, *_ = _round(authenticated=True, dropout_before_input=2)
    assert 2 not in server.included
    assert 2 in server.revealed_keys
    assert np.max(np.abs(total - expected)) <= len(plan.client_ids) / plan.scale


def test_a_saved_state_is_refused_for_another_client_round_or_when_malformed():
    plan, _, _, _, saved, accounts, registry = _round(authenticated=True)
    with pytest.raises(MaskingParameterError, match="not client 1's"):
        MaskingClient.restore(plan, 1, saved[0], account=accounts[1], registry=registry)
    other = plan_round(
        MaskingParams(graph="complete", max_dropout_fraction=0.3),
        round_id=4,
        client_ids=range(6),
        dim=DIM,
    )
    with pytest.raises(MaskingParameterError, match="round 4"):
        MaskingClient.restore(other, 0, saved[0], account=accounts[0], registry=registry)
    with pytest.raises(MaskingParameterError, match="malformed"):
        MaskingClient.restore(plan, 0, saved[0][:-5], account=accounts[0], registry=registry)
    with pytest.raises(MaskingParameterError, match="authentication"):
        MaskingClient.restore(plan, 0, saved[0])
