"""The hardened round end to end: every scheme, dropouts, crashes, resume, reputation."""

from __future__ import annotations

import numpy as np
import pytest

from secagg._auditor import audit
from secagg._roles import ClientParty

TOL = {"plain": 1e-12, "ckks": 1e-5, "masking": 1e-5}


@pytest.mark.parametrize("scheme", ["plain", "ckks", "masking"])
def test_round_reveals_the_sum_and_passes_its_audit(make_federation, scheme):
    fed = make_federation(scheme)
    for round_id in (1, 2):
        outcome, updates = fed.round(round_id)
        assert outcome.included == (0, 1, 2, 3)
        np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=TOL[scheme])
        assert outcome.gas_used > 0
    info = fed.consortium.ledger.round_info(2)
    assert info.finalized
    report = audit(fed.consortium.ledger, fed.consortium.store)
    assert report.exit_code == 0, report.to_table()
    assert [r.round_id for r in report.rounds] == [1, 2]


def test_a_rounds_outcome_cannot_be_changed_by_its_readers(make_federation):
    """What a round produced is what every reader sees: the outcome is frozen, its
    mappings are read-only views and its revealed sum a read-only array."""
    import dataclasses

    fed = make_federation("plain")
    outcome, _ = fed.round(1, drop=[2])
    assert 2 in outcome.excluded and outcome.flagged is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.included = (0, 1, 2, 3)  # type: ignore[misc]
    with pytest.raises(TypeError):
        outcome.excluded[2] = "rewritten"  # type: ignore[index]
    with pytest.raises(TypeError):
        outcome.flagged[0] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        outcome.gas_by_phase["open"] = 0  # type: ignore[index]
    with pytest.raises(ValueError, match="read-only"):
        outcome.total[0] = 1.0  # type: ignore[index]
    assert outcome.excluded[2] != "rewritten"


def test_batched_commits_round_passes_audit(make_federation):
    fed = make_federation("ckks", batch_commits=True)
    outcome, updates = fed.round(1)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=1e-5)
    assert "commitBatch" in fed.consortium.ledger.gas_by_round(1)
    assert audit(fed.consortium.ledger, fed.consortium.store).exit_code == 0


def test_client_crashing_before_commit_is_dropped_and_loses_reputation(make_federation):
    fed = make_federation("ckks")
    outcome, updates = fed.round(1, drop=[2])
    assert outcome.included == (0, 1, 3)
    assert 2 in outcome.excluded
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=1e-5)
    ledger = fed.consortium.ledger
    assert ledger.reputation(fed.consortium.address_of(2)).negative == 1
    assert ledger.reputation(fed.consortium.address_of(0)).positive == 1
    assert audit(ledger, fed.consortium.store).exit_code == 0


def test_masking_recovers_a_client_that_crashes_after_committing(make_federation):
    fed = make_federation("masking", n_clients=6)
    outcome, updates = fed.round(1, crash_after_commit=[4])
    assert 4 in outcome.included
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=1e-5)
    assert audit(fed.consortium.ledger, fed.consortium.store).exit_code == 0


def test_restarted_aggregator_resumes_from_ledger_and_store(make_federation):
    fed = make_federation("ckks")
    protocol = fed.protocol
    protocol.dp_mode = "off"
    selected = [0, 1, 2, 3]
    weights = dict.fromkeys(selected, 0.25)
    rng = np.random.default_rng(1)
    updates = {c: rng.normal(0, 0.05, 64) * 0.25 for c in selected}
    manifest = protocol.manifest(1, selected=selected, weights=weights)
    protocol.aggregator.open_round(manifest)
    session = protocol.scheme.start_round(round_id=1, client_ids=selected, dim=64)
    parties = {c: ClientParty(client_id=c, consortium=fed.consortium) for c in selected}
    submissions = {c: parties[c].commit(1, session, updates[c], None) for c in selected}
    for c in selected:  # every client committed: the commit phase is closed, they reveal
        parties[c].reveal(1, submissions[c])
    # The aggregator process dies here; a new protocol object (same consortium and keys)
    # picks the round up from the ledger and the store.
    del protocol, session
    from secagg._protocol import SecureRoundProtocol

    restarted = SecureRoundProtocol(
        consortium=fed.consortium,
        scheme=fed.protocol.scheme,
        scheme_config=fed.protocol.scheme_config,
        dim=64,
        audit_each_round=False,
    )
    outcome = restarted.resume_round(1)
    assert outcome.included == (0, 1, 2, 3)  # each client exactly once
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=1e-5)
    assert fed.consortium.ledger.round_info(1).finalized
    report = audit(fed.consortium.ledger, fed.consortium.store)
    assert report.exit_code == 0, report.to_table()


def test_reputation_threshold_skips_flagged_clients(make_federation, make_event):
    fed = make_federation("ckks", reputation_threshold=0.45)
    fed.protocol.audit_each_round = True
    # Client 1 commits an event that under-claims its epsilon: the auditor flags it.
    lying = {1: lambda history: make_event(1, 1, history, claim=0.01)}
    outcome, _ = fed.round(1, tamper=lying)
    assert outcome.flagged == {1: 3}
    assert fed.consortium.ledger.reputation(fed.consortium.address_of(1)).negative == 1
    assert fed.protocol.select(range(4)) == [0, 2, 3]


def test_bad_update_is_rejected_alone_and_the_round_carries_on(make_federation):
    fed = make_federation("ckks")
    selected = [0, 1, 2, 3]
    weights = dict.fromkeys(selected, 0.25)
    updates = {c: np.full(64, 0.01) for c in selected}
    updates[2] = np.full(64, np.nan)
    outcome = fed.protocol.run_round(1, selected=selected, weights=weights, updates=updates)
    assert outcome.included == (0, 1, 3)
    assert "InvalidUpdateError" in outcome.excluded[2]
    np.testing.assert_allclose(outcome.total, np.full(64, 0.03), atol=1e-5)


def test_batched_round_leaves_out_only_the_client_over_budget(make_federation, make_event):
    fed = make_federation("ckks", budget=2.0, batch_commits=True)
    liar = {1: lambda history: make_event(1, 1, history, sigma=0.4)}  # honest claim, > 2.0
    outcome, updates = fed.round(1, tamper=liar)
    assert outcome.included == (0, 2, 3)
    assert "over the budget" in outcome.excluded[1]
    np.testing.assert_allclose(
        outcome.total, sum(u for c, u in updates.items() if c != 1), atol=1e-5
    )


def test_refused_update_keeps_the_event_chain_whole(make_federation, make_event):
    fed = make_federation("ckks")
    fed.protocol.audit_each_round = True
    selected = [0, 1, 2, 3]
    weights = dict.fromkeys(selected, 0.25)
    events = {c: make_event(c, 1) for c in selected}
    updates = {c: np.full(64, 0.01) for c in selected}
    updates[2] = np.full(64, np.inf)  # refused by protect; its privacy was still spent
    outcome = fed.protocol.run_round(
        1,
        selected=selected,
        weights=weights,
        updates=updates,
        events=events,
        expected_steps=dict.fromkeys(selected, 10),
    )
    assert 2 not in outcome.included
    later = {c: make_event(c, 2, [events[c]]) for c in selected}
    updates[2] = np.full(64, 0.01)
    outcome = fed.protocol.run_round(
        2,
        selected=selected,
        weights=weights,
        updates=updates,
        events=later,
        expected_steps=dict.fromkeys(selected, 10),
    )
    assert outcome.included == (0, 1, 2, 3) and outcome.flagged == {}


def test_plain_combine_rejects_a_malformed_blob_alone():
    from secagg import PlainScheme

    session = PlainScheme().start_round(round_id=1, client_ids=[0, 1, 2], dim=4)
    blobs = {c: session.protect(c, np.full(4, float(c))) for c in (0, 1)}
    blobs[2] = b"\x00" * 7
    aggregate = session.combine(blobs)
    assert session.combined == (0, 1) and "BlobFormatError" in session.rejected[2]
    np.testing.assert_allclose(session.reveal(aggregate, survivors=[0, 1]), np.full(4, 1.0))


def test_masking_client_that_commits_and_never_reveals_is_recovered_as_a_dropout(
    make_federation,
):
    fed = make_federation("masking", n_clients=6)
    outcome, updates = fed.round(1, withhold_reveal=[4])
    assert 4 not in outcome.included and "did not reveal" in outcome.excluded[4]
    np.testing.assert_allclose(
        outcome.total, sum(u for c, u in updates.items() if c != 4), atol=1e-5
    )
    rep = fed.consortium.ledger.reputation(fed.consortium.address_of(4))
    assert (rep.positive, rep.negative) == (0, 1)
    assert audit(fed.consortium.ledger, fed.consortium.store).exit_code == 0
