"""The round protocol and the auditor in merkle (optimistic) mode, on the in-process EVM:
every scheme with a dropout, a censoring aggregator caught by its victim's proof, and a
withheld leaf set named by the auditor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from eth_utils import keccak

from chain import LeafSet, SignedCommit, TxResult
from secagg._auditor import audit
from secagg._roles import AggregatorParty

TOL = {"plain": 1e-12, "ckks": 1e-5, "masking": 1e-5}


def _leaf_set(aggregator: AggregatorParty, round_id: int, signed: list[SignedCommit]) -> LeafSet:
    """Every signed leaf at its client's index of the drafted round, unchecked."""
    ledger, clients = aggregator.consortium.ledger, aggregator.draft(round_id).clients
    by_client = {c.client.lower(): c for c in signed}
    return LeafSet(
        round_id=round_id,
        chain_id=ledger.chain_id,
        contract=ledger.address,
        clients=clients,
        leaves=tuple(by_client.get(c.lower()) for c in clients),
    )


def _settle(fed) -> None:  # type: ignore[no-untyped-def]
    """Let the challenge windows pass and settle (what the next round's opening does)."""
    ledger = fed.consortium.ledger
    for round_id in fed.protocol.aggregator._unsettled:
        ledger.advance_past(ledger.round_info(round_id).challenge_deadline or 0)
    fed.protocol.aggregator.settle_due()


@pytest.mark.parametrize("scheme", ["plain", "ckks", "masking"])
def test_merkle_round_with_a_dropout_reveals_the_sum_and_passes_its_audit(make_federation, scheme):
    fed = make_federation(scheme, n_clients=5, commit_mode="merkle", challenge_window=2)
    outcome, updates = fed.round(1, drop=[2])
    assert outcome.included == (0, 1, 3, 4)
    np.testing.assert_allclose(outcome.total, sum(updates.values()), atol=TOL[scheme])
    ledger = fed.consortium.ledger
    gas = ledger.gas_by_round(1)
    # the opening with the root, one publication (CKKS: the key holder's publication with
    # its reservation, and its attestation): no per-client transaction at all
    release = {"reserveAndPublish", "attestReveal"}
    assert set(gas) == {"openRoundWithRoot"} | (
        release if scheme == "ckks" else {"publishMerkleRound"}
    )
    info = ledger.round_info(1)
    assert info.merkle and info.commits == 4 and not info.finalized
    _settle(fed)
    assert ledger.round_info(1).finalized
    assert ledger.reputation(fed.consortium.address_of(2)).negative == 1
    assert ledger.reputation(fed.consortium.address_of(0)).positive == 1
    report = audit(ledger, fed.consortium.store)
    assert report.exit_code == 0, report.to_table()
    assert report.rounds[0].checks["root"]


class _CensoringAggregator(AggregatorParty):
    """Leaves one client's valid signed leaf out of the root."""

    victim: str = ""

    def submit_root(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        kept = [c for c in signed if c.client.lower() != self.victim.lower()]
        return super().submit_root(round_id, kept)


def test_censored_client_proves_the_omission_and_keeps_its_reputation(make_federation):
    fed = make_federation("ckks", commit_mode="merkle", challenge_window=2)
    censor = _CensoringAggregator(consortium=fed.consortium)
    censor.victim = fed.consortium.address_of(1)
    fed.protocol.aggregator = censor
    outcome, updates = fed.round(1)
    assert outcome.included == (0, 2, 3)  # the root holds no leaf of client 1
    np.testing.assert_allclose(
        outcome.total, sum(u for c, u in updates.items() if c != 1), atol=1e-5
    )
    ledger = fed.consortium.ledger
    assert ledger.merkle_challenges(1, censor.victim) == 1  # its proof was upheld
    aggregator = fed.consortium.parties.aggregator.address
    assert ledger.reputation(aggregator).negative == 1
    _settle(fed)
    assert ledger.reputation(censor.victim).positive == 1  # counted as done
    report = audit(ledger, fed.consortium.store)
    named = [f for f in report.findings if f.check == "root"]
    assert named and aggregator in named[0].detail and censor.victim in named[0].detail
    assert all(f.client != censor.victim for f in report.findings)


class _WithholdingAggregator(AggregatorParty):
    """Posts a root but stores no leaf set: no client can get its proof."""

    def submit_root(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        leaf_set = _leaf_set(self, round_id, signed)
        digest = bytes(31) + b"\x01"  # names nothing in the store
        return self.open_with_root(round_id, leaf_set, leaves_digest=digest), {}


def test_withheld_leaf_set_aborts_the_round_and_names_the_aggregator(make_federation):
    fed = make_federation("plain", commit_mode="merkle")
    fed.protocol.aggregator = _WithholdingAggregator(consortium=fed.consortium)
    outcome, _ = fed.round(1)
    assert outcome.total is None and outcome.included == ()
    assert all("reveal failed" in reason for reason in outcome.excluded.values())
    report = audit(fed.consortium.ledger, fed.consortium.store)
    named = [f for f in report.findings if f.check == "root"]
    assert named and "leaf set" in named[0].detail and named[0].client is None
    assert not report.rounds[0].checks["root"]


class _ForgingAggregator(AggregatorParty):
    """Puts under the root, at one client's index, a leaf that client never signed (its
    signature over another blob digest)."""

    victim: str = ""

    def submit_root(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        forged = [
            dataclasses.replace(c, blob_digest=keccak(text="substituted"))
            if c.client.lower() == self.victim.lower()
            else c
            for c in signed
        ]
        leaf_set = _leaf_set(self, round_id, forged)
        digest = self.consortium.store.put(leaf_set.canonical_bytes())
        return self.open_with_root(round_id, leaf_set, leaves_digest=digest), {}


def test_substituted_leaf_is_proven_missing_and_named_by_the_auditor(make_federation):
    fed = make_federation("plain", commit_mode="merkle")
    forger = _ForgingAggregator(consortium=fed.consortium)
    forger.victim = fed.consortium.address_of(2)
    fed.protocol.aggregator = forger
    outcome, _ = fed.round(1)
    assert 2 not in outcome.included  # the substituted leaf has no valid signature
    ledger = fed.consortium.ledger
    assert ledger.merkle_challenges(1, forger.victim) == 1  # the victim's proof was upheld
    report = audit(ledger, fed.consortium.store)
    details = [f.detail for f in report.findings if f.check == "root"]
    assert any("no valid signature" in d and forger.victim in d for d in details)
    assert any("omission proven" in d for d in details)
    assert all(f.client != forger.victim for f in report.findings)


def test_honest_aggregator_leaves_an_over_budget_leaf_out_of_the_root(make_federation, make_event):
    fed = make_federation("ckks", budget=2.0, commit_mode="merkle")
    liar = {1: lambda history: make_event(1, 1, history, sigma=0.4)}  # honest claim, > 2.0
    outcome, updates = fed.round(1, tamper=liar)
    assert outcome.included == (0, 2, 3)
    assert "over the budget" in outcome.excluded[1]
    np.testing.assert_allclose(
        outcome.total, sum(u for c, u in updates.items() if c != 1), atol=1e-5
    )


class _LaxAggregator(AggregatorParty):
    """Puts every signed leaf under the root, over-budget claims included."""

    def submit_root(
        self, round_id: int, signed: list[SignedCommit]
    ) -> tuple[TxResult | None, dict[str, str]]:
        leaf_set = _leaf_set(self, round_id, signed)
        digest = self.consortium.store.put(leaf_set.canonical_bytes())
        return self.open_with_root(round_id, leaf_set, leaves_digest=digest), {}


def test_over_budget_leaf_under_the_root_is_proven_and_named(make_federation, make_event):
    fed = make_federation("plain", budget=2.0, commit_mode="merkle")
    fed.protocol.aggregator = _LaxAggregator(consortium=fed.consortium)
    liar = {1: lambda history: make_event(1, 1, history, sigma=0.4)}  # claim > 2.0
    fed.round(1, tamper=liar)
    ledger, store = fed.consortium.ledger, fed.consortium.store
    greedy = fed.consortium.address_of(1)
    # anyone holding the stored leaf set proves the overrun on chain
    leaf_set = LeafSet.from_bytes(store.get(ledger.round_info(1).leaves_digest))
    index = leaf_set.index_of(greedy)
    leaf = leaf_set.leaves[index]
    assert leaf is not None
    before = ledger.reputation(greedy).negative
    ledger.challenge_over_budget(
        1, leaf=leaf, proof=leaf_set.tree().proof(index), sender=fed.consortium.parties.auditor
    )
    assert ledger.reputation(greedy).negative == before + 1
    report = audit(ledger, store)
    assert any(f.check == "budget" and f.client == greedy for f in report.findings)
    assert any(f.check == "challenge" and f.client == greedy for f in report.findings)
