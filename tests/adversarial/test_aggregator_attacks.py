"""Attacks by the aggregator: a forged aggregate payload, early publication, censoring a
signed commitment, cutting a committed client out, and a wrong manifest.

Each test mounts the attack against the real protocol (TenSEAL ciphertexts, the contract on
the in-process EVM) and checks it fails before release, or that the auditor names the
aggregator, and that no honest client is penalized.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chain import CommitPhaseOpen, WrongRound
from secagg._auditor import audit
from secagg._roles import AggregatorParty
from secagg.ckks import parse_blob
from secagg.ckks._blob import KIND_AGGREGATE, encode_blob

from .conftest import DIM, N_CLIENTS

ATOL = 1e-5


class _ForgingAggregator(AggregatorParty):
    """Publishes client 0's ciphertext under the honest aggregate's header (inputs)."""

    scheme = None

    def combine_and_publish(self, round_id, session, collected):
        honest = session.combine(collected.blobs)
        params = self.scheme.params
        context = self.scheme.key_holder.context_digest
        header = parse_blob(honest, params, context_digest=context).header
        victim = parse_blob(collected.blobs[0], params, context_digest=context)
        forged = encode_blob(
            kind=KIND_AGGREGATE,
            params=params,
            context_digest=context,
            element_count=header.element_count,
            coefficients=victim.coefficients,
            inputs=header.inputs,
        )
        tx = self.consortium.ledger.publish_aggregate(
            round_id,
            aggregate_digest=self.consortium.store.put(forged),
            participants=self.consortium.addresses_of(session.combined),
            sender=self.consortium.parties.aggregator,
        )
        return forged, tx


def test_one_clients_ciphertext_under_an_honest_header_is_refused(make_federation):
    fed = make_federation()
    forging = _ForgingAggregator(consortium=fed.consortium)
    forging.scheme = fed.protocol.scheme
    fed.protocol.aggregator = forging
    outcome = fed.run(1, fed.updates())
    assert outcome.total is None and outcome.included == ()
    assert fed.protocol.scheme.key_holder.decryptions == 0  # nothing was decrypted
    info = fed.ledger.round_info(1)
    assert info.refusal_code == 1 and info.reveal_digest is None
    assert not list(fed.ledger.events("ReleaseReserved"))  # refused before reserving
    findings = [f for f in outcome.findings if f.check == "aggregate"]
    assert findings and fed.consortium.parties.aggregator.address in findings[0].detail
    assert {f.check for f in outcome.findings} == {"aggregate"}  # the refusal is accepted
    assert outcome.flagged == {}
    for c in range(N_CLIENTS):
        assert fed.ledger.reputation(fed.address(c)).negative == 0


# The same attack against chain=none's memory ledger: the round's guarantees hold there too.
@pytest.mark.parametrize("ledger", ["evm", "memory"])
def test_publishing_before_the_commit_phase_closes_reverts(make_federation, ledger):
    fed = make_federation(ledger=ledger)
    _, session = fed.open(1)
    updates = fed.updates()
    for c in (0, 1):
        fed.commit(1, session, c, updates[c])
    with pytest.raises(CommitPhaseOpen):
        fed.ledger.publish_aggregate(
            1,
            aggregate_digest=bytes(32),
            participants=[fed.address(0), fed.address(1)],
            sender=fed.consortium.parties.aggregator,
        )
    with pytest.raises(WrongRound):  # nor can it finalize (and penalize) an open round
        fed.ledger.finalize(1, sender=fed.consortium.parties.aggregator)
    for c in (2, 3):  # the late clients still commit in time
        fed.commit(1, session, c, updates[c])
    assert fed.ledger.round_info(1).commits == N_CLIENTS


class _CensoringAggregator(AggregatorParty):
    """Drops one client's signed commitment from the batch."""

    victim = ""

    def submit_batch(self, round_id, signed):
        kept = [c for c in signed if c.client != self.victim]
        return super().submit_batch(round_id, kept)


def test_a_signed_commit_dropped_from_the_batch_is_committed_directly(make_federation):
    fed = make_federation(batch_commits=True)
    censoring = _CensoringAggregator(consortium=fed.consortium)
    censoring.victim = fed.address(2)
    fed.protocol.aggregator = censoring
    updates = fed.updates()
    outcome = fed.run(1, updates)
    assert outcome.included == (0, 1, 2, 3)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    assert "commitOwn" in fed.ledger.gas_by_round(1)
    rep = fed.ledger.reputation(fed.address(2))
    assert (rep.positive, rep.negative) == (1, 0)
    assert outcome.findings == ()
    info = fed.ledger.round_info(1)
    assert info.accumulator == fed.ledger.expected_accumulator(1)


class _ExcludingAggregator(AggregatorParty):
    """Leaves one committed, revealed client out of the participants."""

    victim = 3

    def combine_and_publish(self, round_id, session, collected):
        collected.blobs.pop(self.victim)
        return super().combine_and_publish(round_id, session, collected)


# The same attack against chain=none's memory ledger: the round's guarantees hold there too.
@pytest.mark.parametrize("ledger", ["evm", "memory"])
def test_excluded_committed_client_is_not_penalized_and_the_aggregator_is_named(
    make_federation, ledger
):
    fed = make_federation(ledger=ledger)
    fed.protocol.aggregator = _ExcludingAggregator(consortium=fed.consortium)
    updates = fed.updates()
    outcome = fed.run(1, updates)
    assert outcome.included == (0, 1, 2)
    info = fed.ledger.round_info(1)
    (published,) = fed.ledger.events("AggregatePublished")
    assert published.block_number > info.reveal_deadline  # it had to wait out the reveals
    rep = fed.ledger.reputation(fed.address(3))
    assert (rep.positive, rep.negative) == (1, 0)
    assert outcome.flagged == {}
    (finding,) = outcome.findings
    assert finding.check == "aggregate" and finding.client is None
    assert fed.consortium.parties.aggregator.address in finding.detail
    assert fed.address(3) in finding.detail


# The same attack against chain=none's memory ledger: the round's guarantees hold there too.
@pytest.mark.parametrize("ledger", ["evm", "memory"])
def test_a_wrong_manifest_blames_the_aggregator_not_the_clients(make_federation, ledger):
    fed = make_federation(ledger=ledger)
    honest_manifest = fed.protocol.manifest

    def wrong_dim(round_id, **kwargs):  # a well-formed manifest with the wrong dimension
        return dataclasses.replace(honest_manifest(round_id, **kwargs), dim=DIM + 1)

    fed.protocol.manifest = wrong_dim
    outcome = fed.run(1, fed.updates())
    assert outcome.total is None  # the key holder's recombination fails: nothing released
    assert fed.protocol.scheme.key_holder.decryptions == 0
    assert outcome.flagged == {}
    assert all(f.client is None for f in outcome.findings)
    (blame,) = [f for f in outcome.findings if f.check == "manifest"]
    assert fed.consortium.parties.aggregator.address in blame.detail
    for c in range(N_CLIENTS):  # every client committed (binding that manifest) and revealed
        rep = fed.ledger.reputation(fed.address(c))
        assert (rep.positive, rep.negative) == (1, 0)
    report = audit(fed.ledger, fed.store)
    assert report.exit_code == 1 and all(f.client is None for f in report.findings)
