"""Batched and merkle commits over the deployment (in-process transport, a real anvil
ledger, real TenSEAL ciphertexts): each hospital signs with its own account on its own
site, the driver submits one transaction, the hospitals check their row (batched) or their
leaf proof (merkle) before revealing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from eth_account import Account

from chain import SignedCommit
from deploy import (
    JOIN,
    TRAIN,
    HospitalSite,
    InProcessTransport,
    KeyHolderSite,
    RoundDriver,
    SettingsError,
    WireMessage,
)
from deploy._commit_modes import signed_commit_fields, signed_commit_from
from deploy._sites import SitePolicy, SitePolicyError, attach_ledger
from secagg import AggregatorParty, audit
from tests.flower.conftest import HEART, in_process_sites, scheme_overrides
from tests.flower.test_inprocess import FreshSitePerMessage, audit_cli

pytestmark = pytest.mark.anvil

ONE_ROUND = "federation.rounds=1"


def run_ledger(run: Any) -> Any:
    """The run's ledger, attached as any other reader would."""
    return attach_ledger(run.results.ledger["url"], run.results.ledger["address"])


def fresh_sites(hospitals: int) -> InProcessTransport:
    """Every site rebuilt for every message from the state it kept (Flower 1.42 SuperNodes)."""
    keys = [Account.create() for _ in range(hospitals)]
    key_holder = Account.create()
    wrappers: dict[int, Any] = {
        100 + p: FreshSitePerMessage(
            lambda p=p: HospitalSite(
                partition_id=p, account=keys[p], policy=SitePolicy.permissive()
            )
        )
        for p in range(hospitals)
    }
    wrappers[1] = FreshSitePerMessage(lambda: KeyHolderSite(account=key_holder))
    return InProcessTransport(wrappers)


@pytest.mark.parametrize("scheme", ["plain", "ckks"])
@pytest.mark.slow
def test_batched_and_merkle_give_the_direct_modes_aggregate(heart_settings, scheme):
    """dp=off, same seed: every mode ends on the direct mode's model (bit for bit for
    plain; CKKS to the release grid), every hospital in every round, audit clean.
    The merkle run's sites live one message each (their signed rows, the key holder's
    key and the publication it sends survive only in the state each keeps)."""
    direct = RoundDriver(heart_settings(scheme, name="direct"), in_process_sites(4)).run()
    runs = {
        "batched": RoundDriver(
            heart_settings(scheme, "chain.commit_mode=batched", name="batched"),
            in_process_sites(4),
        ).run(),
        "merkle": RoundDriver(
            heart_settings(scheme, "chain.commit_mode=merkle", name="merkle"), fresh_sites(4)
        ).run(),
    }
    for mode, run in runs.items():
        assert [r.n_clients for r in run.results.rounds] == [4, 4], mode
        assert all(not r.excluded for r in run.results.rounds), mode
        if scheme == "plain":
            assert np.array_equal(run.params, direct.params), mode
        else:
            # each run has its own key pair and flooding noise: the models agree to the
            # release grid (2^-precision_bits per round), as on Flower (test_simulation)
            grid = 2.0 ** -int(run.results.config["secagg"]["precision_bits"])
            assert np.max(np.abs(run.params - direct.params)) <= 16 * grid, mode
        assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
        audited = audit_cli(run.results_path)
        assert audited.returncode == 0, audited.stdout + audited.stderr
    batched, merkle = run_ledger(runs["batched"]), run_ledger(runs["merkle"])
    for round_id in (1, 2):
        assert batched.round_info(round_id).mode == "batched"
        assert (
            len(list(batched.events("BatchCommitted", argument_filters={"round": round_id}))) == 1
        )
        info = merkle.round_info(round_id)
        assert info.merkle and info.commits == 4
        if scheme == "ckks":  # the key holder sent the aggregator's signed publication
            assert list(merkle.events("MerklePublished", argument_filters={"round": round_id}))


class _CensoringAggregator(AggregatorParty):
    """Leaves one hospital's valid signed leaf out of the root."""

    victim = ""
    dropped: list[SignedCommit]

    def submit_root(self, round_id: int, signed: list[SignedCommit]) -> Any:
        kept = [c for c in signed if c.client.lower() != self.victim.lower()]
        self.dropped = [c for c in signed if c not in kept]
        return super().submit_root(round_id, kept)


class _CensoringDriver(RoundDriver):
    victim_partition = 2

    def open_ledger(self) -> None:
        super().open_ledger()
        censor = _CensoringAggregator(consortium=self.view.as_consortium())
        censor.victim = self.hospitals[self.victim_partition].address
        self.aggregator = censor


def test_a_hospital_left_out_of_the_root_keeps_its_blob_and_proves_the_omission(
    heart_settings,
):
    run = _CensoringDriver(
        heart_settings("plain", "chain.commit_mode=merkle", ONE_ROUND), in_process_sites(4)
    )
    result = run.run()
    (record,) = result.results.rounds
    assert record.n_clients == 3
    assert "LeafOmittedError" in record.excluded[2]
    assert "omission proven on chain" in record.excluded[2]
    ledger = run_ledger(result)
    victim = run.hospitals[2].address
    assert ledger.merkle_challenges(1, victim) == 1  # its own proof, upheld on chain
    assert ledger.reputation(run.view.parties.aggregator.address).negative == 1
    (dropped,) = run.aggregator.dropped  # its valid leaf, signed with its own account
    assert dropped.blob_digest not in run.view.store  # it kept its blob
    report = audit(ledger, run.view.store)
    named = [f for f in report.findings if f.check == "root"]
    assert named and victim in named[0].detail  # the auditor names the censoring aggregator
    assert all(f.client != victim for f in report.findings)


class _BatchDroppingAggregator(AggregatorParty):
    """Leaves one hospital's valid signed row out of the batch (it still asks it to reveal)."""

    victim = ""

    def submit_batch(self, round_id: int, signed: list[SignedCommit]) -> Any:
        kept = [c for c in signed if c.client.lower() != self.victim.lower()]
        return super().submit_batch(round_id, kept)


class _BatchDroppingDriver(RoundDriver):
    def open_ledger(self) -> None:
        super().open_ledger()
        dropping = _BatchDroppingAggregator(consortium=self.view.as_consortium())
        dropping.victim = self.hospitals[3].address
        self.aggregator = dropping


def test_a_hospital_whose_row_is_not_on_chain_keeps_its_blob(heart_settings):
    run = _BatchDroppingDriver(
        heart_settings("plain", "chain.commit_mode=batched", ONE_ROUND), in_process_sites(4)
    )
    (record,) = run.run().results.rounds
    assert record.n_clients == 3
    assert record.excluded[3].startswith("no reveal: CommitmentMismatchError"), record.excluded
    assert "not on chain" in record.excluded[3]
    assert set(record.excluded) == {3}


class _ResigningSite:
    """Hospital 1 replaces its signature in the train reply: with another key (a forgery)
    or with its own key for the next round (a replay from another round)."""

    def __init__(self, site: HospitalSite, *, forgery: str) -> None:
        self.site = site
        self.forgery = forgery

    def __call__(self, message: WireMessage) -> WireMessage:
        reply = self.site.handle(message)
        if message.type != TRAIN:
            return reply
        honest = signed_commit_from(reply, client=str(self.site.account.address))
        ledger = self.site._ledger
        assert ledger is not None
        signer = Account.create() if self.forgery == "other_key" else self.site.account
        round_id = honest.round_id + (1 if self.forgery == "other_round" else 0)
        forged = ledger.sign_commit(
            signer,
            round_id=round_id,
            manifest_digest=honest.manifest_digest,
            blob_digest=honest.blob_digest,
            event_digest=honest.event_digest,
            epsilon=0.0,
        )
        fields = {**reply.fields, **signed_commit_fields(forged)}
        return WireMessage(reply.type, fields=fields, arrays=reply.arrays)


@pytest.mark.parametrize(
    ("mode", "forgery", "reason"),
    [
        ("batched", "other_key", "batch commit refused: invalid signature"),
        ("merkle", "other_round", "leaf refused: signed round 2, not round 1"),
    ],
)
def test_a_bad_signature_leaves_only_its_hospital_out(heart_settings, mode, forgery, reason):
    transport = in_process_sites(4)
    site = HospitalSite(partition_id=1, policy=SitePolicy.permissive())
    transport.sites[101] = _ResigningSite(site, forgery=forgery)
    result = RoundDriver(
        heart_settings("plain", f"chain.commit_mode={mode}", ONE_ROUND), transport
    ).run()
    (record,) = result.results.rounds
    assert record.n_clients == 3
    assert set(record.excluded) == {1}
    assert record.excluded[1].startswith(reason), record.excluded[1]
    assert result.results.final.audit["exit_code"] == 0, result.results.final.audit


def join_request(*overrides: str) -> WireMessage:
    return WireMessage(JOIN, fields={"overrides": "\n".join((*HEART, *overrides))})


def test_a_hospital_refuses_to_join_a_commit_mode_its_policy_does_not_allow(heart_data):
    policy = SitePolicy.from_node_config({"schemes": "plain,ckks", "commit-modes": "direct"})
    assert policy.commit_modes == ("direct",)
    site = HospitalSite(partition_id=0, policy=policy)
    with pytest.raises(SitePolicyError, match="commit_mode=merkle is not accepted"):
        site.handle(join_request(*scheme_overrides("plain"), "chain.commit_mode=merkle"))
    assert site.federation is None  # refused before loading any data
    joined = site.handle(join_request(*scheme_overrides("plain")))  # direct: accepted
    assert joined.text("role") == "hospital"
    with pytest.raises(SettingsError, match="commit-modes"):
        SitePolicy(commit_modes=("optimistic",))


def test_masking_rounds_still_commit_directly(heart_settings):
    with pytest.raises(SettingsError, match="commit_mode=batched with secagg=masking"):
        RoundDriver(heart_settings("masking", "chain.commit_mode=batched"), in_process_sites(0))


def test_a_merkle_hospital_refuses_a_proof_that_does_not_lead_to_the_root(heart_settings):
    """The driver's proof is not taken on its word: a proof that does not verify against
    the root on chain leaves the blob on the hospital's node (and proves nothing)."""
    from deploy import REVEAL
    from deploy._commit_modes import LEAF_PROOF

    transport = in_process_sites(4)
    honest = transport.sites[100]

    def bad_proof(message: WireMessage) -> WireMessage:
        if message.type == REVEAL:
            proof = bytearray(message.blob(LEAF_PROOF))
            proof[0] ^= 1
            message = WireMessage(REVEAL, fields={**message.fields, LEAF_PROOF: bytes(proof)})
        return honest(message)

    transport.sites[100] = bad_proof
    run = RoundDriver(heart_settings("plain", "chain.commit_mode=merkle", ONE_ROUND), transport)
    (record,) = run.run().results.rounds
    assert record.n_clients == 3
    assert "InclusionProofError" in record.excluded[0]
    assert "does not lead to the root" in record.excluded[0]
    assert run.ledger.merkle_challenges(1, run.hospitals[0].address) == 0


def test_a_merkle_hospital_signs_one_leaf_per_round(heart_settings):
    """A driver that asks again for a round (say, with another manifest) gets no second
    leaf: two leaves of one hospital for a round would be an equivocation provable on
    chain against it. The first leaf still counts."""
    from deploy._commit_modes import AlreadySignedError

    transport = in_process_sites(4)
    honest = transport.sites[101]
    refusals: list[Exception] = []

    def asked_twice(message: WireMessage) -> WireMessage:
        reply = honest(message)
        if message.type == TRAIN:
            try:
                honest(message)
            except AlreadySignedError as error:
                refusals.append(error)
        return reply

    transport.sites[101] = asked_twice
    run = RoundDriver(heart_settings("plain", "chain.commit_mode=merkle", ONE_ROUND), transport)
    (record,) = run.run().results.rounds
    assert len(refusals) == 1 and "equivocation" in str(refusals[0])
    assert record.n_clients == 4 and not record.excluded


def test_signed_rows_and_publications_survive_the_flower_mapping():
    """The new fields travel as one Flower ``RecordDict`` and come back as the same signed
    objects (the driver reads the row for the address it knows, never the row's own)."""
    from chain._eip712 import sign_commit, sign_publication
    from deploy import RELEASE
    from deploy._commit_modes import publication_fields, publication_from
    from deploy._transport import from_record_dict, to_record_dict

    contract = Account.create().address
    hospital, aggregator = Account.create(), Account.create()
    signed = sign_commit(
        hospital,
        chain_id=31337,
        verifying_contract=contract,
        round_id=3,
        manifest_digest=bytes(range(32)),
        blob_digest=bytes(32),
        event_digest=bytes([7]) * 32,
        epsilon=1.25,
    )
    reply = from_record_dict(
        to_record_dict(WireMessage(TRAIN, fields=signed_commit_fields(signed)))
    )
    assert signed_commit_from(reply, client=hospital.address) == signed
    publication = sign_publication(
        aggregator,
        chain_id=31337,
        verifying_contract=contract,
        round_id=3,
        aggregate_digest=bytes([9]) * 32,
        participant_words=(2**255 + 5, 1),
    )
    request = from_record_dict(
        to_record_dict(WireMessage(RELEASE, fields=publication_fields(publication)))
    )
    assert publication_from(request) == publication


def test_dp_sample_leaves_claim_each_hospitals_own_epsilon(heart_settings):
    """dp=sample, merkle: each leaf under the root claims its hospital's cumulative epsilon
    from its own accountant (the auditor recomputes it from the events: audit clean)."""
    from secagg._merkle_round import check_leaves
    from tests.flower.test_dp import DP_SAMPLE

    run = RoundDriver(
        heart_settings("ckks", *DP_SAMPLE, "chain.commit_mode=merkle"), in_process_sites(4)
    )
    result = run.run()
    assert [r.n_clients for r in result.results.rounds] == [4, 4]
    for record in result.results.rounds:
        leaves = check_leaves(run.ledger, run.view.store, record.round)
        assert not leaves.problems
        claimed = {run.view.client_id_of(c.client): c.epsilon for c in leaves.commitments}
        expected = {p: record.epsilon_per_client[h.name] for p, h in sorted(run.hospitals.items())}
        assert claimed == pytest.approx(expected, abs=1e-6)
        assert min(claimed.values()) > 0
    assert result.results.final.audit["exit_code"] == 0, result.results.final.audit
