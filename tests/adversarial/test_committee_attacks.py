"""Attacks by (or on) a decryption committee: a member publishing a wrong partial, and a
forged aggregate the members must refuse.

Each test runs the real protocol (TenSEAL CKKS under the committee's collective key, the
contract on the in-process EVM) with one adversarial party swapped in.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chain import InProcessBackend, RoundStatus
from secagg._auditor import audit
from secagg._committee_round import REFUSAL_BAD_PARTIALS, CommitteeMemberParty
from secagg._consortium import Consortium
from secagg._protocol import SecureRoundProtocol
from secagg._roles import REFUSAL_AGGREGATE_MISMATCH, AggregatorParty
from secagg._store import LocalDirectoryStore
from secagg.ckks import CKKSSchema, PartialDecryption, PublicContext, build_ckks_scheme, parse_blob
from secagg.ckks._blob import KIND_AGGREGATE, encode_blob

from .conftest import DIM, N_CLIENTS, Federation

ATOL = 1e-6


def committee_federation(tmp_path, *, size: int, threshold: int) -> Federation:
    backend = InProcessBackend()
    consortium = Consortium.create(
        backend,
        n_clients=N_CLIENTS,
        store=LocalDirectoryStore(tmp_path / "store"),
        epsilon_budget=10.0,
    )
    schema = CKKSSchema(committee_size=size, committee_threshold=threshold)
    protocol = SecureRoundProtocol(
        consortium=consortium,
        scheme=build_ckks_scheme(schema),
        scheme_config=dataclasses.asdict(schema),
        dim=DIM,
        audit_each_round=True,
    )
    return Federation(protocol, consortium, backend, np.random.default_rng(5))


class _WrongPartialMember(CommitteeMemberParty):
    """Publishes its honest partial shifted by a large offset (and attests that one)."""

    def partial(self, round_id, aggregate):
        honest = PartialDecryption.from_bytes(
            self.member.partial_decrypt(aggregate), self.member.params
        )
        q = 1 << (honest.bits - 1)
        wrong = dataclasses.replace(
            honest, coefficients=(honest.coefficients + np.uint64(q // 3)) % np.uint64(q)
        ).to_bytes()
        digest = self.consortium.store.put(wrong)
        self.consortium.ledger.attest_partial(round_id, partial_digest=digest, sender=self.account)
        return wrong


def _corrupt(fed: Federation, member: int) -> str:
    committee = fed.protocol.committee
    honest = committee.members[member - 1]
    committee.members[member - 1] = _WrongPartialMember(
        consortium=fed.consortium, account=honest.account, member=honest.member
    )
    return honest.account.address


def test_a_wrong_partial_is_dropped_and_its_member_named_by_the_auditor(tmp_path):
    fed = committee_federation(tmp_path, size=4, threshold=2)
    address = _corrupt(fed, 4)
    updates = fed.updates()
    outcome = fed.run(1, updates)
    # 4 partials >= T + 2: the cross-check names member 4, the other three release the sum
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    named = [f for f in outcome.findings if f.check == "reveal"]
    assert len(named) == 1 and "committee member 4" in named[0].detail
    assert address in named[0].detail
    assert outcome.flagged == {}  # no client is at fault
    report = audit(fed.ledger, fed.store)
    assert report.exit_code == 1 and [f.detail for f in report.findings] == [named[0].detail]


def test_a_wrong_partial_among_t_plus_one_is_detected_and_nothing_released(tmp_path):
    fed = committee_federation(tmp_path, size=3, threshold=2)
    _corrupt(fed, 3)
    outcome = fed.run(1, fed.updates())
    assert outcome.total is None and outcome.included == ()
    info = fed.ledger.round_info(1)
    assert info.refusal_code == REFUSAL_BAD_PARTIALS and info.reveal_digest in (None, bytes(32))
    # the refusal holds (the attested partials are inconsistent): the audit is clean
    assert audit(fed.ledger, fed.store).exit_code == 0


class _ForgingAggregator(AggregatorParty):
    """Publishes client 0's ciphertext under the honest aggregate's header (inputs)."""

    scheme = None

    def combine_and_publish(self, round_id, session, collected):
        honest = session.combine(collected.blobs)
        params = self.scheme.params
        context = PublicContext.from_bytes(self.scheme.public_context).digest
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


def test_members_refuse_a_forged_aggregate_before_any_partial(tmp_path):
    fed = committee_federation(tmp_path, size=3, threshold=2)
    forging = _ForgingAggregator(consortium=fed.consortium)
    forging.scheme = fed.protocol.scheme
    fed.protocol.aggregator = forging
    outcome = fed.run(1, fed.updates())
    assert outcome.total is None and outcome.included == ()
    assert all(party.member.decryptions == 0 for party in fed.protocol.committee.members)
    info = fed.ledger.round_info(1)
    assert info.status is RoundStatus.FINALIZED
    assert info.refusal_code == REFUSAL_AGGREGATE_MISMATCH and info.reveal_digest is None
    assert not list(fed.ledger.events("PartialAttested"))
    assert not list(fed.ledger.events("ReleaseReserved"))
    findings = [f for f in outcome.findings if f.check == "aggregate"]
    assert findings and fed.consortium.parties.aggregator.address in findings[0].detail
    assert {f.check for f in outcome.findings} == {"aggregate"}  # the refusal is accepted


def test_a_substituted_public_key_is_refused_by_the_members_and_named_by_the_auditor(tmp_path):
    # A dishonest setup hands clients a key that is not the committee's (one the operator
    # can decrypt with alone): the members cannot decrypt under it and refuse, and the
    # auditor finds the manifest's key is not the combination of the committed shares.
    fed = committee_federation(tmp_path, size=3, threshold=2)
    rogue = build_ckks_scheme(CKKSSchema())
    fed.protocol.scheme.install_public_context(rogue.public_context)
    fed.protocol.public_material = fed.store.put(rogue.public_context).hex()
    outcome = fed.run(1, fed.updates())
    assert outcome.total is None and outcome.included == ()
    assert all(party.member.decryptions == 0 for party in fed.protocol.committee.members)
    assert not list(fed.ledger.events("PartialAttested"))
    details = [f.detail for f in outcome.findings if f.check == "reveal"]
    assert any("not the committed key shares" in d for d in details), details
