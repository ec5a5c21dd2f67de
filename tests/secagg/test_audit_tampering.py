"""The auditor catches tampering and names the culprit (exit code 1), from ledger + store."""

from __future__ import annotations

import numpy as np

from secagg._auditor import audit
from secagg._roles import AggregatorParty
from secagg.ckks import CKKSClient, combine_blobs


def _findings(fed, **kw):
    report = audit(fed.consortium.ledger, fed.consortium.store, **kw)
    assert report.exit_code == 1, report.to_table()
    return report


def _blob_path(fed, round_id, client_id):
    ledger = fed.consortium.ledger
    address = fed.consortium.address_of(client_id)
    commitment = next(c for c in ledger.commitments(round_id) if c.client == address)
    return fed.consortium.store.root / bytes(commitment.blob_digest).hex()


def test_clean_run_is_clean(make_federation):
    fed = make_federation("ckks")
    fed.round(1)
    fed.round(2)
    assert audit(fed.consortium.ledger, fed.consortium.store).exit_code == 0


def test_blob_altered_after_commit_names_the_client(make_federation):
    fed = make_federation("ckks")
    fed.round(1)
    path = _blob_path(fed, 1, 2)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    report = _findings(fed)
    culprit = fed.consortium.address_of(2)
    assert [(f.round_id, f.check, f.client) for f in report.findings if f.check == "blobs"] == [
        (1, "blobs", culprit)
    ]
    assert "does not match its commitment" in report.findings[0].detail


def test_blobs_swapped_between_clients_name_both(make_federation):
    fed = make_federation("ckks")
    fed.round(1)
    first, second = _blob_path(fed, 1, 0), _blob_path(fed, 1, 1)
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    report = _findings(fed)
    named = {f.client for f in report.findings if f.check == "blobs"}
    assert named == {fed.consortium.address_of(0), fed.consortium.address_of(1)}


class _DroppingAggregator(AggregatorParty):
    """Leaves one committed client out of the aggregate."""

    victim = 3

    def combine_and_publish(self, round_id, session, collected):
        collected.blobs.pop(self.victim)
        return super().combine_and_publish(round_id, session, collected)


def test_aggregate_leaving_out_a_committed_client_names_it(make_federation):
    fed = make_federation("ckks")
    fed.protocol.aggregator = _DroppingAggregator(consortium=fed.consortium)
    outcome, _ = fed.round(1)
    assert 3 not in outcome.included
    report = _findings(fed)
    (finding,) = report.findings
    # The aggregator is named; the client, which committed and revealed, is not at fault.
    assert (finding.round_id, finding.check, finding.client) == (1, "aggregate", None)
    assert fed.consortium.parties.aggregator.address in finding.detail
    assert fed.consortium.address_of(3) in finding.detail


class _PaddingAggregator(AggregatorParty):
    """Adds a blob nobody committed to the aggregate it publishes."""

    def combine_and_publish(self, round_id, session, collected):
        scheme = self.public_context_owner
        extra = CKKSClient(scheme.public_context).protect(np.full(64, 0.5))
        ordered = [collected.blobs[c] for c in sorted(collected.blobs)]
        aggregate = combine_blobs(scheme.public_context, [*ordered, extra])
        session.combined = tuple(sorted(collected.blobs))
        digest = self.consortium.store.put(aggregate)
        tx = self.consortium.ledger.publish_aggregate(
            round_id,
            aggregate_digest=digest,
            participants=self.consortium.addresses_of(session.combined),
            sender=self.consortium.parties.aggregator,
        )
        return aggregate, tx


def test_aggregate_with_an_uncommitted_blob_is_refused_and_named(make_federation):
    fed = make_federation("ckks")
    padding = _PaddingAggregator(consortium=fed.consortium)
    padding.public_context_owner = fed.protocol.scheme
    fed.protocol.aggregator = padding
    outcome, _ = fed.round(1)
    # The key holder refuses to decrypt an aggregate whose inputs were not committed.
    assert outcome.total is None
    report = _findings(fed)
    (finding,) = [f for f in report.findings if f.check == "aggregate"]
    assert "uncommitted blob" in finding.detail
    # ... and its refusal, attested on chain, is accepted: the aggregate was indeed wrong.
    assert {f.check for f in report.findings} == {"aggregate"}
    assert fed.consortium.ledger.round_info(1).refusal_code == 1
    assert fed.consortium.parties.aggregator.address in finding.detail


def test_event_claiming_fewer_steps_than_taken_names_the_client(make_federation, make_event):
    fed = make_federation("ckks")
    fed.round(1)
    fed.round(2, tamper={2: lambda history: make_event(2, 2, history, steps=5)})
    report = _findings(fed)
    (finding,) = report.findings
    assert (finding.round_id, finding.check, finding.client) == (
        2,
        "privacy",
        fed.consortium.address_of(2),
    )
    assert "claims 5 steps, the round ran 10" in finding.detail


def test_epsilon_claim_not_following_from_parameters_names_the_client(make_federation, make_event):
    fed = make_federation("ckks")
    fed.round(1, tamper={1: lambda history: make_event(1, 1, history, claim=0.01)})
    report = _findings(fed)
    (finding,) = report.findings
    assert (finding.check, finding.client) == ("privacy", fed.consortium.address_of(1))
    assert "its parameters give" in finding.detail


def test_client_over_budget_is_named(make_federation, make_event):
    fed = make_federation("ckks", budget=2.0)
    liar = {0: lambda history: make_event(0, 1, history, sigma=0.4, claim=0.5)}
    fed.round(1, tamper=liar)
    report = _findings(fed)
    checks = {(f.check, f.client) for f in report.findings}
    culprit = fed.consortium.address_of(0)
    assert ("budget", culprit) in checks
    assert ("privacy", culprit) in checks
    assert all(f.client == culprit for f in report.findings)


def test_single_round_audit_reports_only_that_round(make_federation, make_event):
    fed = make_federation("ckks")
    fed.round(1, tamper={1: lambda history: make_event(1, 1, history, claim=0.01)})
    fed.round(2)
    assert audit(fed.consortium.ledger, fed.consortium.store, round_id=2).exit_code == 0
    assert audit(fed.consortium.ledger, fed.consortium.store, round_id=1).exit_code == 1
    missing = audit(fed.consortium.ledger, fed.consortium.store, round_id=9)
    assert missing.exit_code == 2 and "never opened" in missing.cannot_audit


def test_client_copying_another_clients_blob_is_named(make_federation):
    from secagg._roles import ClientParty, Submission

    fed = make_federation("ckks")
    original_commit = ClientParty.commit

    def copying_commit(self, round_id, session, update, event):
        if self.client_id == 1:  # client 1 commits client 0's (public) blob digest as its own
            zero = fed.consortium.address_of(0)
            theirs = next(
                c for c in fed.consortium.ledger.commitments(round_id) if c.client == zero
            )
            event_digest = fed.consortium.store.put(event.canonical_bytes())
            manifest_digest = fed.consortium.ledger.round_info(round_id).config_digest
            fed.consortium.ledger.commit(
                round_id,
                manifest_digest=manifest_digest,
                blob_digest=theirs.blob_digest,
                event_digest=event_digest,
                epsilon=event.cumulative_epsilon,
                sender=fed.consortium.account_of(1),
            )
            return Submission(
                1, theirs.blob_digest, event_digest, event.cumulative_epsilon, manifest_digest
            )
        return original_commit(self, round_id, session, update, event)

    ClientParty.commit = copying_commit
    try:
        fed.round(1)
    finally:
        ClientParty.commit = original_commit
    report = _findings(fed)
    assert {(f.check, f.client) for f in report.findings} == {
        ("blobs", fed.consortium.address_of(1))
    }
    assert "same blob" in report.findings[0].detail


def test_client_committing_another_clients_privacy_history_is_named(make_federation):
    fed = make_federation("ckks")
    # Client 3 commits client 0's (cheaper) event history instead of its own.
    fed.round(1, tamper={3: lambda history: fed.events[0][-1]})
    report = _findings(fed)
    (finding,) = report.findings
    assert (finding.check, finding.client) == ("privacy", fed.consortium.address_of(3))
    assert "privacy events of 'client-0'" in finding.detail


def test_audit_command_without_a_ledger_entry_cannot_audit(tmp_path):
    from secagg.cli import main

    assert main(["audit", "--results", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "plain.json").write_text('{"ledger": null}')
    assert main(["audit", "--results", str(tmp_path / "plain.json")]) == 2
