"""Attacks by a client: isolating, copying or cancelling another client's CKKS update, late
reveals, and commit-without-reveal; plus the honest runs that must not be flagged.

Each test mounts the attack against the real protocol (TenSEAL ciphertexts, the contract on
the in-process EVM) and checks it fails before anything is released, or is named by the
auditor, and that honest clients lose nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from chain import AlreadyCommitted, DeadlinePassed
from secagg._auditor import audit
from secagg._errors import ProtocolAbortError
from secagg._store import ArtifactNotFoundError
from secagg.ckks import combine_blobs

from .conftest import negate_blob, rerandomize_blob

ATOL = 1e-5


def test_the_negation_attack_works_without_commit_then_reveal(make_federation):
    """Sanity: the attack is real. Given a victim's ciphertext, its negation mod q added to
    the sum cancels it; the key holder would then release another client's update alone."""
    fed = make_federation()
    scheme = fed.protocol.scheme
    _, session = fed.open(1)
    updates = fed.updates()
    blobs = {c: session.protect(c, updates[c]) for c in (0, 1, 2)}
    negation = negate_blob(scheme, blobs[0])
    cancelled = combine_blobs(scheme.public_context, [blobs[0], negation, blobs[1]])
    released = scheme.key_holder.reveal(cancelled)
    np.testing.assert_allclose(released, updates[1], atol=ATOL)  # client 1 isolated
    copy = rerandomize_blob(scheme, blobs[2])  # other bytes, same plaintext
    assert copy != blobs[2]
    copied = combine_blobs(scheme.public_context, [blobs[2], copy])
    np.testing.assert_allclose(scheme.key_holder.reveal(copied), 2 * updates[2], atol=ATOL)


# The same attack against chain=none's memory ledger: the round's guarantees hold there too.
@pytest.mark.parametrize("ledger", ["evm", "memory"])
def test_last_client_cannot_read_a_blob_before_the_commit_phase_closes(make_federation, ledger):
    fed = make_federation(ledger=ledger)
    scheme, ledger, store = fed.protocol.scheme, fed.ledger, fed.store
    _, session = fed.open(1)
    updates = fed.updates()
    honest = {c: fed.commit(1, session, c, updates[c]) for c in (0, 1, 2)}
    # The attacker (client 3) waits for the others, then looks for client 0's blob.
    victim = honest[0]
    on_chain = {c.client: c.blob_digest for c in ledger.commitments(1)}
    assert on_chain[fed.address(0)] == victim.blob_digest  # the digest is public...
    with pytest.raises(ArtifactNotFoundError):
        store.get(victim.blob_digest)  # ...the blob is not: nothing to negate or copy
    with pytest.raises(ProtocolAbortError):  # honest clients refuse to reveal early
        fed.party(0).reveal(1, victim)
    # Waiting does not help: the phase closes at the deadline, and then no one commits.
    fed.protocol.aggregator.close_commit_phase(1)
    for c, submission in honest.items():
        fed.party(c).reveal(1, submission)
    negation = negate_blob(scheme, store.get(victim.blob_digest))
    with pytest.raises(DeadlinePassed):
        ledger.commit(
            1,
            manifest_digest=ledger.round_info(1).config_digest,
            blob_digest=store.put(negation),  # even stored, an uncommitted blob is ignored
            event_digest=bytes(32),
            epsilon=0.0,
            sender=fed.consortium.account_of(3),
        )
    outcome = fed.protocol.resume_round(1)
    assert outcome.included == (0, 1, 2)
    np.testing.assert_allclose(outcome.total, sum(updates[c] for c in (0, 1, 2)), atol=ATOL)
    assert outcome.findings == () and outcome.flagged == {}
    rep = ledger.reputation(fed.address(3))
    assert (rep.positive, rep.negative) == (0, 1)  # the silent attacker is a dropout


# The same attack against chain=none's memory ledger: the round's guarantees hold there too.
@pytest.mark.parametrize("ledger", ["evm", "memory"])
def test_a_client_that_committed_cannot_recommit_a_copy_or_a_cancellation(make_federation, ledger):
    fed = make_federation(ledger=ledger)
    scheme, ledger, store = fed.protocol.scheme, fed.ledger, fed.store
    _, session = fed.open(1)
    updates = fed.updates()
    submissions = {c: fed.commit(1, session, c, updates[c]) for c in range(4)}
    for c, submission in submissions.items():  # everyone committed: the reveal phase runs
        fed.party(c).reveal(1, submission)
    victim_blob = store.get(submissions[0].blob_digest)
    config = ledger.round_info(1).config_digest
    copy_plus_zero = rerandomize_blob(scheme, victim_blob)
    for forged in (victim_blob, negate_blob(scheme, victim_blob), copy_plus_zero):
        with pytest.raises(AlreadyCommitted):
            ledger.commit(
                1,
                manifest_digest=config,
                blob_digest=store.put(forged),
                event_digest=bytes(32),
                epsilon=0.0,
                sender=fed.consortium.account_of(3),
            )
    outcome = fed.protocol.resume_round(1)
    assert outcome.included == (0, 1, 2, 3)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    assert outcome.findings == ()


# The same attack against chain=none's memory ledger: the round's guarantees hold there too.
@pytest.mark.parametrize("ledger", ["evm", "memory"])
def test_copied_commitment_digest_is_rejected_and_the_copier_named(make_federation, ledger):
    """The digests are public in the commit phase; a client that commits another client's
    digest (hoping to reveal the same bytes later) is found by commit order."""
    fed = make_federation(ledger=ledger)
    ledger = fed.ledger
    _, session = fed.open(1)
    updates = fed.updates()
    submissions = {c: fed.commit(1, session, c, updates[c]) for c in (0, 1, 2)}
    ledger.commit(  # client 3 copies client 1's commitment from the chain
        1,
        manifest_digest=ledger.round_info(1).config_digest,
        blob_digest=submissions[1].blob_digest,
        event_digest=bytes(32),
        epsilon=0.0,
        sender=fed.consortium.account_of(3),
    )
    for c, submission in submissions.items():
        fed.party(c).reveal(1, submission)
    ledger.reveal(1, sender=fed.consortium.account_of(3))
    outcome = fed.protocol.resume_round(1)
    assert outcome.included == (0, 1, 2)  # the victim counts once, and is not displaced
    np.testing.assert_allclose(outcome.total, sum(updates[c] for c in (0, 1, 2)), atol=ATOL)
    assert {f.client for f in outcome.findings} == {fed.address(3)}
    assert outcome.flagged == {3: 1}


def test_a_late_reveal_of_an_uncommitted_blob_is_ignored(make_federation):
    fed = make_federation()
    ledger, store = fed.ledger, fed.store
    _, session = fed.open(1)
    updates = fed.updates()
    submissions = {c: fed.commit(1, session, c, updates[c]) for c in range(4)}
    for c in (0, 1, 2):
        fed.party(c).reveal(1, submissions[c])
    # Client 3 reveals on chain but stores another blob than the one it committed.
    store.put(session.protect(3, np.full(32, 0.5)))
    ledger.reveal(1, sender=fed.consortium.account_of(3))
    outcome = fed.protocol.resume_round(1)
    assert outcome.included == (0, 1, 2)
    np.testing.assert_allclose(outcome.total, sum(updates[c] for c in (0, 1, 2)), atol=ATOL)
    named = [(f.check, f.client) for f in outcome.findings]
    assert named == [("blobs", fed.address(3))]  # it claimed a reveal it did not make


@pytest.mark.parametrize("batched", [False, True])
def test_commit_without_reveal_is_a_dropout_with_a_negative_event(make_federation, batched):
    fed = make_federation(batch_commits=batched)
    updates = fed.updates()
    outcome = fed.run(1, updates, withhold_reveal=[2])
    assert outcome.included == (0, 1, 3)
    assert "did not reveal" in outcome.excluded[2]
    np.testing.assert_allclose(outcome.total, sum(updates[c] for c in (0, 1, 3)), atol=ATOL)
    rep = fed.ledger.reputation(fed.address(2))
    assert (rep.positive, rep.negative) == (0, 1)
    assert outcome.findings == () and outcome.flagged == {}
    assert audit(fed.ledger, fed.store).exit_code == 0  # reputation mirror agrees


@pytest.mark.parametrize("scheme", ["ckks", "plain"])
def test_identical_plain_updates_are_not_flagged(make_federation, scheme):
    fed = make_federation(scheme)
    same = np.full(32, 0.01)
    updates = {c: same.copy() for c in range(4)}
    outcome = fed.run(1, updates)
    assert outcome.included == (0, 1, 2, 3)
    np.testing.assert_allclose(outcome.total, np.full(32, 0.04), atol=ATOL)
    assert outcome.findings == () and outcome.flagged == {}
    assert audit(fed.ledger, fed.store).exit_code == 0
