"""Attacks by (or on) the key holder: repeated releases of one aggregate, averaging the
flooding away, releasing without a reservation, and false or rightful refusals.

Each test runs the real protocol (TenSEAL CKKS, the contract on the in-process EVM).
"""

from __future__ import annotations

import numpy as np
import pytest

from chain import WrongRound
from secagg._auditor import audit
from secagg._roles import REFUSAL_TOO_FEW_INPUTS, KeyHolderParty, ReleaseRefusedError
from secagg.ckks._flooding import flood_and_round, flooding_seed, prf_gaussian

from .conftest import N_CLIENTS

ATOL = 1e-5


def test_a_second_release_is_refused_and_repeats_give_identical_bytes(make_federation):
    fed = make_federation()
    updates = fed.updates()
    outcome = fed.run(1, updates)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    aggregate = fed.store.get(outcome.aggregate_digest)
    manifest = fed.protocol.aggregator.manifest(1)
    session = fed.protocol.scheme.start_round(round_id=1, client_ids=range(4), dim=32)
    with pytest.raises(ReleaseRefusedError):  # the ledger holds the round's one release
        fed.protocol.key_holder.reveal(1, manifest, session, aggregate, survivors=[0, 1])
    with pytest.raises(WrongRound):
        fed.ledger.reserve_release(1, sender=fed.consortium.parties.key_holder)
    # Even asked directly, the key holder can only return the same bytes again, so
    # averaging many releases strips nothing of the flooding.
    key_holder = fed.protocol.scheme.key_holder
    releases = [key_holder.reveal(aggregate) for _ in range(16)]
    for released in releases:
        assert released.tobytes() == outcome.total.tobytes()
    assert np.mean(releases, axis=0).tobytes() == outcome.total.tobytes()
    assert key_holder.decryptions == 1


def test_the_release_is_reserved_on_the_ledger_before_decryption(make_federation):
    fed = make_federation()
    fed.run(1, fed.updates())
    (reserved,) = fed.ledger.events("ReleaseReserved")
    (attested,) = fed.ledger.events("RevealAttested")
    (published,) = fed.ledger.events("AggregatePublished")
    assert published.block_number < reserved.block_number < attested.block_number
    assert "reserveRelease" in fed.ledger.gas_by_round(1)


def test_a_merkle_release_is_reserved_with_its_publication_before_decryption(make_federation):
    """Merkle rounds: the key holder's one transaction publishes the aggregator's signed
    publication and reserves the release, before the one decryption; a replayed request
    (even with the aggregator's valid signed publication) is refused without decrypting."""
    fed = make_federation(commit_mode="merkle")
    updates = fed.updates()
    outcome = fed.run(1, updates)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=ATOL)
    (reserved,) = fed.ledger.events("ReleaseReserved")
    (published,) = fed.ledger.events("MerklePublished")
    (attested,) = fed.ledger.events("RevealAttested")
    assert reserved.tx_hash == published.tx_hash  # publication and reservation: one tx
    assert reserved.block_number < attested.block_number
    assert "reserveRelease" not in fed.ledger.gas_by_round(1)
    key_holder = fed.protocol.scheme.key_holder
    assert key_holder.decryptions == 1
    info = fed.ledger.round_info(1)
    publication = fed.ledger.sign_publication(
        1,
        aggregate_digest=outcome.aggregate_digest,
        participants=info.participants or (),
        account=fed.consortium.parties.aggregator,
    )
    aggregate = fed.store.get(outcome.aggregate_digest)
    manifest = fed.protocol.aggregator.manifest(1)
    session = fed.protocol.scheme.start_round(round_id=1, client_ids=range(4), dim=32)
    with pytest.raises(ReleaseRefusedError):
        fed.protocol.key_holder.reveal(
            1, manifest, session, aggregate, survivors=[0, 1], publication=publication
        )
    with pytest.raises(WrongRound):
        fed.ledger.publish_and_reserve(publication, sender=fed.consortium.parties.key_holder)
    assert key_holder.decryptions == 1


def test_flooding_noise_is_a_secret_prf_of_the_aggregate():
    values = np.zeros(20_000)
    key, other_key = bytes(range(32)), bytes(range(1, 33))
    digest, other_digest = b"\x01" * 32, b"\x02" * 32
    seed = flooding_seed(key, digest)
    first = flood_and_round(values, flood_std=2.0**-10, grid=2.0**-30, seed=seed)
    again = flood_and_round(values, flood_std=2.0**-10, grid=2.0**-30, seed=seed)
    assert first.tobytes() == again.tobytes()
    for other_seed in (flooding_seed(key, other_digest), flooding_seed(other_key, digest)):
        other = flood_and_round(values, flood_std=2.0**-10, grid=2.0**-30, seed=other_seed)
        assert not np.array_equal(first, other)
    noise = prf_gaussian(20_000, std=1.0, seed=seed)
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05
    with pytest.raises(ValueError):
        flooding_seed(b"short", digest)


def test_a_rightful_refusal_is_attested_and_the_audit_accepts_it(make_federation):
    fed = make_federation()
    updates = fed.updates([1])  # three clients drop out: one input < min_clients = 2
    outcome = fed.run(1, updates)
    assert outcome.total is None
    info = fed.ledger.round_info(1)
    assert info.refusal_code == REFUSAL_TOO_FEW_INPUTS and info.finalized
    assert outcome.findings == () and outcome.flagged == {}
    assert audit(fed.ledger, fed.store).exit_code == 0
    assert fed.protocol.scheme.key_holder.decryptions == 0


class _RefusingKeyHolder(KeyHolderParty):
    """Claims too few inputs whatever the aggregate holds."""

    def reveal(self, round_id, manifest, session, aggregate, *, survivors):
        self.consortium.ledger.attest_refusal(
            round_id, reason_code=REFUSAL_TOO_FEW_INPUTS, sender=self.consortium.parties.key_holder
        )
        raise ReleaseRefusedError("refused", reason_code=REFUSAL_TOO_FEW_INPUTS)


def test_a_false_refusal_names_the_key_holder(make_federation):
    fed = make_federation()
    fed.protocol.key_holder = _RefusingKeyHolder(consortium=fed.consortium, attests=True)
    outcome = fed.run(1, fed.updates())
    assert outcome.total is None and outcome.flagged == {}
    (finding,) = outcome.findings
    assert finding.check == "reveal" and finding.client is None
    assert fed.consortium.parties.key_holder.address in finding.detail
    for c in range(N_CLIENTS):
        assert fed.ledger.reputation(fed.address(c)).negative == 0
