"""Committee decryption in the round protocol: K members on the in-process EVM, any T of
them release the sum; up to K - T absent members are tolerated, one more aborts the round
with nothing released; the auditor checks the collective key and the released sum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chain import ChainError, InProcessBackend, Role, RoundStatus
from secagg._auditor import audit
from secagg._committee_round import REFUSAL_TOO_FEW_PARTIALS
from secagg._consortium import Consortium
from secagg._protocol import SecureRoundProtocol
from secagg._store import LocalDirectoryStore
from secagg.ckks import CKKSSchema, build_ckks_scheme, verify_public_context

from .conftest import DIM, Federation

ATOL = 1e-6


def committee_federation(tmp_path, *, size: int, threshold: int, n_clients: int = 4):
    backend = InProcessBackend()
    consortium = Consortium.create(
        backend,
        n_clients=n_clients,
        store=LocalDirectoryStore(tmp_path / f"store-{size}-{threshold}"),
        epsilon_budget=10.0,
    )
    schema = CKKSSchema(committee_size=size, committee_threshold=threshold)
    protocol = SecureRoundProtocol(
        consortium=consortium,
        scheme=build_ckks_scheme(schema),
        scheme_config=dataclasses.asdict(schema),
        dim=DIM,
        dp_mode="sample",
        audit_each_round=False,
    )
    return Federation(protocol, consortium, n_clients, np.random.default_rng(11))


@pytest.mark.parametrize(("size", "threshold"), [(3, 3), (3, 2)])
def test_committee_round_releases_the_sum_and_audits_clean(tmp_path, size, threshold):
    fed = committee_federation(tmp_path, size=size, threshold=threshold)
    ledger = fed.consortium.ledger
    info = ledger.committee()
    assert info is not None and info.size == size and info.threshold == threshold
    assert sorted(info.share_digests) == list(range(1, size + 1))
    for member in info.members:
        assert Role.COMMITTEE in ledger.roles_of(member)
    shares = [fed.consortium.store.get(info.share_digests[j]) for j in range(1, size + 1)]
    scheme = fed.protocol.scheme
    verify_public_context(
        scheme.public_context,
        committee=scheme.committee,
        crp_seed=bytes(info.seed),
        shares=shares,
    )
    outcome, updates = fed.round(1)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    assert ledger.round_info(1).status is RoundStatus.FINALIZED
    assert sorted(ledger.partial_attestations(1)) == list(range(1, size + 1))
    assert sorted(outcome.committee) == list(range(1, size + 1))
    assert all(s["seconds"] > 0 and s["bytes_up"] > 0 for s in outcome.committee.values())
    report = audit(ledger, fed.consortium.store)
    assert report.exit_code == 0, report.findings


def test_one_absent_member_of_two_of_three_is_tolerated(tmp_path):
    fed = committee_federation(tmp_path, size=3, threshold=2)
    outcome, updates = fed.round(1, absent_members=[2])
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    assert sorted(fed.consortium.ledger.partial_attestations(1)) == [1, 3]
    assert audit(fed.consortium.ledger, fed.consortium.store).exit_code == 0


def test_two_absent_members_abort_the_round_and_nothing_is_released(tmp_path):
    fed = committee_federation(tmp_path, size=3, threshold=2)
    outcome, _ = fed.round(1, absent_members=[1, 3])
    ledger = fed.consortium.ledger
    assert outcome.total is None and outcome.included == ()
    assert all("fewer than T committee members" in r for r in outcome.excluded.values())
    info = ledger.round_info(1)
    assert info.refusal_code == REFUSAL_TOO_FEW_PARTIALS
    assert info.reveal_digest in (None, bytes(32))
    assert sorted(ledger.partial_attestations(1)) == [2]
    assert audit(ledger, fed.consortium.store).exit_code == 0


def test_committee_is_set_up_once_and_only_members_release(tmp_path):
    fed = committee_federation(tmp_path, size=3, threshold=2)
    ledger, parties = fed.consortium.ledger, fed.consortium.parties

    with pytest.raises(ChainError):
        ledger.setup_committee([parties.auditor.address] * 2, threshold=1, sender=parties.admin)
    member = fed.protocol.committee.members[0].account
    with pytest.raises(ChainError):  # a key share is committed once
        ledger.commit_key_share(b"\x01" * 32, sender=member)
    with pytest.raises(ChainError):  # only members commit key shares
        ledger.commit_key_share(b"\x01" * 32, sender=parties.auditor)
    fed.round(1, absent_members=[1, 2, 3])  # nobody releases: the round stays published
    assert ledger.round_info(1).status is RoundStatus.FINALIZED
    with pytest.raises(ChainError):  # the single key holder cannot release for a committee
        ledger.reserve_release(1, sender=parties.key_holder)
    with pytest.raises(ChainError):  # no partial without a reserved release
        ledger.attest_partial(1, partial_digest=b"\x02" * 32, sender=member)
    assert ledger.partial_attestations(1) == {}
    (finding,) = audit(ledger, fed.consortium.store).findings
    assert "attested neither a reveal nor a refusal" in finding.detail
