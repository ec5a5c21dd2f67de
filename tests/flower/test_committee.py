"""A deployed CKKS decryption committee (``secagg.committee_size`` = 3, threshold 2): each
member on its own node with its own ledger account and key share, over the in-process
transport; real TenSEAL ciphertexts, the real contract on anvil, the real auditor."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from eth_account import Account

from chain import RoundStatus
from deploy import (
    COMMITTEE_COMBINE,
    COMMITTEE_KEYGEN,
    COMMITTEE_RELEASE,
    COMMITTEE_SETUP,
    JOIN,
    CommitteeSite,
    CommitteeSiteError,
    DeploymentError,
    DeploymentSettings,
    HospitalSite,
    InProcessTransport,
    RoundDriver,
    SettingsError,
    SitePolicy,
    WireFormatError,
    WireMessage,
)
from secagg._committee_round import REFUSAL_TOO_FEW_PARTIALS
from secagg._roles import REFUSAL_AGGREGATE_MISMATCH
from tests.flower.conftest import HEART, in_process_sites
from tests.flower.test_inprocess import FreshSitePerMessage, audit_cli

pytestmark = pytest.mark.anvil

K, T = 3, 2
COMMITTEE = ("secagg=ckks", f"secagg.committee_size={K}", f"secagg.committee_threshold={T}")


def committee_settings(anvil_url: str, tmp_path, name: str, *extra: str) -> DeploymentSettings:
    return DeploymentSettings(
        overrides=(*HEART, *COMMITTEE, *extra),
        ledger_url=anvil_url,
        output_dir=tmp_path / name,
        hospitals=4,
        key_holder=False,
        committee=K,
        stage_timeout_s=60.0,
    )


def committee_transport(members=range(1, K + 1)) -> InProcessTransport:
    """Hospitals on nodes 100.., committee member j on node j (every site permissive:
    one operator runs them all here)."""
    sites = {
        100 + p: HospitalSite(partition_id=p, policy=SitePolicy.permissive()).handle
        for p in range(4)
    }
    for j in members:
        sites[j] = CommitteeSite(member=j).handle
    return InProcessTransport(sites)


class Recording:
    """A site wrapper that keeps every request and every error its site raised (the
    driver sees only a missing reply)."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.requests: list[WireMessage] = []
        self.errors: list[Exception] = []

    def __call__(self, message: WireMessage) -> WireMessage:
        self.requests.append(message)
        try:
            return self.handler(message)
        except Exception as error:
            self.errors.append(error)
            raise


def test_a_committee_round_equals_the_single_key_holder_run_and_audits_clean(
    heart_data, anvil_url, tmp_path, heart_settings
):
    """Each member rebuilt for every message from the state it keeps on its own node (as
    a Flower 1.42 SuperNode runs each message in a fresh process)."""
    transport = committee_transport()
    keys = {j: Account.create() for j in range(1, K + 1)}
    members = {
        j: FreshSitePerMessage(lambda j=j: CommitteeSite(member=j, account=keys[j]))
        for j in range(1, K + 1)
    }
    transport.sites.update(members)
    run = RoundDriver(committee_settings(anvil_url, tmp_path, "committee"), transport)
    committee = run.run()
    single = RoundDriver(heart_settings("ckks", name="single"), in_process_sites(4)).run()
    assert [r.n_clients for r in committee.results.rounds] == [4, 4]
    for record in committee.results.rounds:
        assert set(record.committee) == {1, 2, 3}
        assert all(stats["bytes_up"] > 0 for stats in record.committee.values())
    # approximate: two key sets, each release flooded; both on the release grid
    grid = 2.0 ** -int(committee.results.config["secagg"]["precision_bits"])
    assert np.max(np.abs(committee.params - single.params)) <= 16 * grid
    assert not np.array_equal(committee.params, np.zeros_like(committee.params))
    info = run.ledger.committee()
    assert info is not None and (info.size, info.threshold) == (K, T)
    assert set(info.share_digests) == {1, 2, 3}  # each member committed its own share
    written = json.loads(committee.results_path.read_text())
    assert set(written["rounds"][0]["committee"]) == {"1", "2", "3"}
    assert committee.results.final.audit["exit_code"] == 0
    audit = audit_cli(committee.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert all(w.sites_made >= 4 for w in members.values())
    assert all("secret" in w.state for w in members.values())  # on its node, never sent


class AbsentIn:
    """A site that does not answer ``message_type`` in the given rounds (a lost node)."""

    def __init__(self, handler, *, message_type: str, rounds: set[int]) -> None:
        self.handler = handler
        self.message_type = message_type
        self.rounds = rounds

    def __call__(self, message: WireMessage) -> WireMessage:
        if message.type == self.message_type and message.integer("round") in self.rounds:
            raise ConnectionError("committee node unreachable")
        return self.handler(message)


def test_t_members_release_a_round_fewer_refuse_it_and_the_run_goes_on(
    heart_data, anvil_url, tmp_path
):
    """Round 1: member 1 is absent, members 2 and 3 release. Round 2: members 1 and 2 are
    absent, member 3 alone attests the refusal (too few partials), the round's clients
    are left out. Round 3: all three release again."""
    transport = committee_transport()
    member_1 = transport.sites[1]
    transport.sites[1] = AbsentIn(member_1, message_type=COMMITTEE_RELEASE, rounds={1, 2})
    transport.sites[2] = AbsentIn(transport.sites[2], message_type=COMMITTEE_RELEASE, rounds={2})
    member_3 = transport.sites[3]
    recording = Recording(member_3)
    transport.sites[3] = recording
    settings = committee_settings(anvil_url, tmp_path, "dropout", "federation.rounds=3")
    driver = RoundDriver(settings, transport)
    run = driver.run()
    rounds = run.results.rounds
    assert [r.n_clients for r in rounds] == [4, 0, 4]
    assert set(rounds[0].committee) == {2, 3}
    assert rounds[1].committee is None
    assert all("CommitteeReleaseError" in why for why in rounds[1].excluded.values())
    assert driver.ledger.round_info(2).refusal_code == REFUSAL_TOO_FEW_PARTIALS
    assert set(driver.ledger.partial_attestations(2)) == {3}
    assert set(rounds[2].committee) == {1, 2, 3}
    assert run.results.final.audit["exit_code"] == 0
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # a replayed release of a finalized round: member 3 (which decrypted it) and member 1
    # (absent then, so no record of its own: the ledger's status refuses it)
    replay = next(
        m for m in recording.requests if m.type == COMMITTEE_RELEASE and m.integer("round") == 1
    )
    with pytest.raises(CommitteeSiteError, match="already decrypted"):
        member_3(replay)
    assert driver.ledger.round_info(1).status is RoundStatus.FINALIZED
    with pytest.raises(CommitteeSiteError, match="not open"):
        member_1(replay)
    combine = next(m for m in recording.requests if m.type == COMMITTEE_COMBINE)
    with pytest.raises(CommitteeSiteError, match="no reserved release"):
        member_3(combine)


def test_members_lost_before_the_combine_leave_their_round_reserved_and_the_run_goes_on(
    heart_data, anvil_url, tmp_path
):
    """Round 1: every member publishes its partial, then none answers the combine (all
    lost). Only a member can end a reserved release, so the round stays reserved and
    unfinalized, its hospitals are left out with the reason, the auditor names the round,
    and round 2 releases as usual."""
    transport = committee_transport()
    for j in range(1, K + 1):
        transport.sites[j] = AbsentIn(
            transport.sites[j], message_type=COMMITTEE_COMBINE, rounds={1}
        )
    driver = RoundDriver(committee_settings(anvil_url, tmp_path, "lost"), transport)
    run = driver.run()
    first, second = run.results.rounds
    assert first.n_clients == 0 and len(first.excluded) == 4
    assert all("no committee member combined" in why for why in first.excluded.values())
    assert driver.ledger.round_info(1).status is RoundStatus.RELEASING
    assert set(driver.ledger.partial_attestations(1)) == {1, 2, 3}
    assert second.n_clients == 4 and set(second.committee) == {1, 2, 3}
    assert driver.ledger.round_info(2).status is RoundStatus.FINALIZED
    findings = run.results.final.audit["findings"]
    assert run.results.final.audit["exit_code"] == 1
    assert [(f["round_id"], f["detail"]) for f in findings] == [
        (1, "the committee reserved the release but attested neither a reveal nor a refusal")
    ]


def test_a_member_refuses_an_aggregate_that_is_not_the_published_one(
    heart_data, anvil_url, tmp_path
):
    """The aggregate a member is asked to decrypt must be the one whose digest is on chain:
    a changed byte and the member refuses (and attests why), so nothing is released."""
    transport = committee_transport()
    honest = transport.sites[2]

    def tampered(message: WireMessage) -> WireMessage:
        if message.type == COMMITTEE_RELEASE:
            fields = dict(message.fields)
            aggregate = bytearray(fields["aggregate"])
            aggregate[-1] ^= 1
            fields["aggregate"] = bytes(aggregate)
            message = WireMessage(COMMITTEE_RELEASE, fields=fields)
        return honest(message)

    recording = Recording(tampered)
    transport.sites[2] = recording
    rounds = tuple(o for o in HEART if not o.startswith("federation.rounds="))
    settings = DeploymentSettings(
        overrides=(*rounds, "federation.rounds=1", *COMMITTEE),
        ledger_url=anvil_url,
        output_dir=tmp_path / "tampered",
        hospitals=4,
        key_holder=False,
        committee=K,
        stage_timeout_s=60.0,
    )
    driver = RoundDriver(settings, transport)
    run = driver.run()
    assert run.results.rounds[0].n_clients == 0
    assert len(recording.errors) == 1
    assert isinstance(recording.errors[0], CommitteeSiteError)
    assert "not the published one" in str(recording.errors[0])
    assert driver.ledger.round_info(1).refusal_code == REFUSAL_AGGREGATE_MISMATCH


class LyingCombiner:
    """Member 1 (the lowest that answers, so the one asked to combine) lies in round 1:
    it attests on chain the sum of the attested partials plus 0.25 (``attests``) and/or
    returns that shifted sum to the driver (``returns``), the honest sum otherwise."""

    def __init__(self, handler, *, attests: bool, returns: bool) -> None:
        self.handler = handler
        self.attests = attests
        self.returns = returns

    def __call__(self, message: WireMessage) -> WireMessage:
        if message.type != COMMITTEE_COMBINE or message.integer("round") != 1:
            return self.handler(message)
        import deploy._committee as module

        honest = module.combine_attested
        sums = {}

        def combine(*args, **kwargs):
            total, members, named = honest(*args, **kwargs)
            sums["honest"], sums["shifted"] = np.asarray(total), np.asarray(total) + 0.25
            return (sums["shifted"] if self.attests else sums["honest"]), members, named

        module.combine_attested = combine
        try:
            reply = self.handler(message)
        finally:
            module.combine_attested = honest
        total = sums["shifted"] if self.returns else sums["honest"]
        return WireMessage(reply.type, fields=reply.fields, arrays={"total": total})


@pytest.mark.parametrize(
    ("attests", "returns", "why"),
    [
        (True, True, "not what the attested partials release"),
        (False, True, "not what the attested partials release"),
        (True, False, "attested another sum"),
    ],
    ids=["attests-and-returns", "returns-only", "attests-only"],
)
def test_a_lying_combiner_leaves_its_round_out_before_the_sum_reaches_the_model(
    heart_data, anvil_url, tmp_path, attests, returns, why
):
    """The driver recombines the attested partials itself (public data): a combiner whose
    sum is not theirs, or not the one it attested, is named, its round's clients are left
    out, the next round releases as usual; a lie on chain is named by the auditor too."""
    transport = committee_transport()
    transport.sites[1] = LyingCombiner(transport.sites[1], attests=attests, returns=returns)
    driver = RoundDriver(committee_settings(anvil_url, tmp_path, "liar"), transport)
    run = driver.run()
    first, second = run.results.rounds
    assert first.n_clients == 0 and first.committee is None
    assert len(first.excluded) == 4
    assert all(
        why in reason and "committee member 1" in reason for reason in first.excluded.values()
    )
    assert second.n_clients == 4 and set(second.committee) == {1, 2, 3}
    assert first.flagged == {}  # no hospital is at fault
    details = [f["detail"] for f in run.results.final.audit["findings"]]
    if attests:  # the lie is on chain: the auditor names the round afterwards
        assert run.results.final.audit["exit_code"] == 1
        assert [f["round_id"] for f in run.results.final.audit["findings"]] == [1]
        if returns:  # the driver kept the bytes the chain names
            assert details == ["the attested reveal is not the sum the attested partials release"]
        else:  # nobody but the liar has the bytes the chain names
            assert details[0].startswith("attested reveal not verifiable: 'no artifact")
    else:  # the chain holds the honest sum; the driver alone saw the lie, and refused it
        assert run.results.final.audit["exit_code"] == 0, details


def test_join_refuses_a_missing_or_doubled_member_and_a_doubled_hospital_address(heart_data):
    settings = DeploymentSettings(
        overrides=(*HEART, *COMMITTEE),
        ledger_url="http://127.0.0.1:1",
        hospitals=4,
        key_holder=False,
        committee=K,
    )
    nodes = committee_transport(members=(1, 2))
    with pytest.raises(DeploymentError, match=r"member\(s\) \[3\] did not join"):
        RoundDriver(settings, nodes).join(nodes.nodes())
    nodes.sites[3] = CommitteeSite(member=2).handle
    with pytest.raises(DeploymentError, match="two nodes claim committee member 2"):
        RoundDriver(settings, nodes).join(nodes.nodes())
    hospital = Account.create()
    nodes.sites[100] = HospitalSite(
        partition_id=0, account=hospital, policy=SitePolicy.permissive()
    ).handle
    nodes.sites[3] = CommitteeSite(member=3, account=hospital).handle
    with pytest.raises(DeploymentError, match="member 3 claims the ledger address"):
        RoundDriver(settings, nodes).join(nodes.nodes())
    account = Account.create()
    twins = InProcessTransport(
        {
            100 + p: HospitalSite(
                partition_id=p, account=account, policy=SitePolicy.permissive()
            ).handle
            for p in range(2)
        }
    )
    plain = DeploymentSettings(
        overrides=(*HEART, "secagg=plain"), ledger_url="http://127.0.0.1:1", hospitals=2
    )
    with pytest.raises(DeploymentError, match=r"ledger address .* of another hospital"):
        RoundDriver(plain, twins).join(twins.nodes())


def test_settings_and_hostile_committee_messages_get_named_errors(tmp_path):
    with pytest.raises(SettingsError, match="committee nodes"):
        RoundDriver(
            DeploymentSettings(
                overrides=(*HEART, *COMMITTEE), ledger_url="http://127.0.0.1:1", hospitals=4
            ),
            InProcessTransport({}),
        )
    committee_run = {"key_holder": False, "committee": K, "hospitals": 4}
    with pytest.raises(SettingsError, match="with a decryption committee is not deployed"):
        RoundDriver(
            DeploymentSettings(
                overrides=(*HEART, *COMMITTEE, "chain.commit_mode=merkle"),
                ledger_url="http://127.0.0.1:1",
                **committee_run,
            ),
            InProcessTransport({}),
        )
    with pytest.raises(SettingsError, match="central noise needs a single releasing party"):
        RoundDriver(
            DeploymentSettings(
                overrides=(*HEART, *COMMITTEE, "dp=client"),
                ledger_url="http://127.0.0.1:1",
                **committee_run,
            ),
            InProcessTransport({}),
        )
    with pytest.raises(SettingsError, match="replace the key holder"):
        DeploymentSettings(overrides=HEART, ledger_url="http://127.0.0.1:1", committee=3)
    from_run_config = DeploymentSettings.from_run_config(
        {"overrides": ",".join(COMMITTEE), "ledger-url": "http://127.0.0.1:1"}
        | {"key-holder": False, "committee": K, "hospitals": 4}
    )
    assert (from_run_config.committee, from_run_config.nodes) == (K, 4 + K)
    site = CommitteeSite(member=2)
    join = WireMessage(JOIN, fields={"overrides": "\n".join((*HEART, *COMMITTEE))})
    reply = site.handle(join)
    assert reply.integer("member") == 2 and reply.text("role") == "committee"
    with pytest.raises(CommitteeSiteError, match="not in the run's committee"):
        CommitteeSite(member=4).handle(join)
    single = WireMessage(JOIN, fields={"overrides": "\n".join((*HEART, "secagg=ckks",
        "secagg.committee_size=1", "secagg.committee_threshold=1"))})  # fmt: skip
    with pytest.raises(CommitteeSiteError, match="no decryption committee"):
        CommitteeSite(member=1).handle(single)
    with pytest.raises(CommitteeSiteError, match="holds no key share"):
        site.handle(WireMessage(COMMITTEE_RELEASE, fields={"round": 1}))
    with pytest.raises(CommitteeSiteError, match="does not answer"):
        site.handle(WireMessage("secagg.v1.train", fields={}))
    with pytest.raises(WireFormatError):  # a keygen without the ledger's fields
        site.handle(WireMessage(COMMITTEE_KEYGEN, fields={"box_key.1": b"x"}))
    state = site.export_state()
    with pytest.raises(CommitteeSiteError, match="state of member 2"):
        CommitteeSite(member=1).restore_state(state)
    with pytest.raises(CommitteeSiteError, match=r"index is 1\.\.K"):
        CommitteeSite(member=0)


@pytest.mark.slow
def test_a_committee_on_the_simulation_engine(heart_data, anvil_url, tmp_path):
    """Seven SuperNodes on Flower's simulation engine: the last three partitions are the
    committee's members 1..3 (chosen at join from the run's committee size)."""
    from deploy.flower_app import run_in_simulation

    run = run_in_simulation(committee_settings(anvil_url, tmp_path, "flower"))
    assert run.results.meta["transport"] == "FlowerTransport"
    assert [r.n_clients for r in run.results.rounds] == [4, 4]
    assert all(set(r.committee) == {1, 2, 3} for r in run.results.rounds)
    assert run.results.final.audit["exit_code"] == 0


def test_a_member_saved_and_restored_on_its_node_releases_as_before():
    """:meth:`CommitteeMember.export_secret` / ``restore`` (a member's state between
    messages): restored after dealing and after joining, the members still release the
    exact sum; a state is refused under another committee or before the shares are dealt."""
    import os

    from secagg.ckks import (
        CKKSAggregator,
        CKKSClient,
        CommitteeMember,
        CommitteeParams,
        CommitteeSetupError,
        RevealPolicy,
        aggregation_params,
        combine_partials,
    )

    params, policy = aggregation_params(), RevealPolicy(min_clients=2)
    committee, seed = CommitteeParams(size=K, threshold=T), os.urandom(32)
    members = [
        CommitteeMember(member=j, params=params, committee=committee, policy=policy, crp_seed=seed)
        for j in committee.members
    ]
    with pytest.raises(CommitteeSetupError, match="not dealt"):
        members[0].export_secret()
    for dealer in members:
        for recipient, message in dealer.deal_secret_shares().items():
            members[recipient - 1].receive_secret_share(sender=dealer.member, message=message)

    def reload(member: CommitteeMember) -> CommitteeMember:
        return CommitteeMember.restore(
            member.export_secret(), params=params, committee=committee, policy=policy
        )

    members = [reload(m) for m in members]
    shares = [m.public_key_share for m in members]
    context = {m.join(shares).to_bytes() for m in members}.pop()
    members = [reload(m) for m in members]
    with pytest.raises(CommitteeSetupError, match="other parameters or committee"):
        CommitteeMember.restore(
            members[0].export_secret(),
            params=params,
            committee=CommitteeParams(size=K, threshold=K),
            policy=policy,
        )
    rng = np.random.default_rng(7)
    updates = rng.uniform(-1.0, 1.0, size=(2, 64))
    client = CKKSClient(context)
    blobs = [client.protect(u) for u in updates]
    aggregator = CKKSAggregator(context, element_count=64)
    for blob in blobs:
        aggregator.add(blob)
    aggregate = aggregator.aggregate()
    partials = [m.partial_decrypt(aggregate, committed_blobs=blobs) for m in members[1:]]
    release = combine_partials(
        aggregate, partials, public_context=context, committee=committee, policy=policy
    )
    assert np.max(np.abs(release.values[:64] - updates.sum(axis=0))) < 1e-5


class Tampering:
    """A driver that changes one field of one stage's request to a member."""

    def __init__(self, handler, *, message_type: str, field: str, value: bytes) -> None:
        self.handler = handler
        self.message_type = message_type
        self.field = field
        self.value = value

    def __call__(self, message: WireMessage) -> WireMessage:
        if message.type == self.message_type:
            message = WireMessage(message.type, fields={**message.fields, self.field: self.value})
        return self.handler(message)


@pytest.mark.parametrize(
    ("message_type", "field", "why"),
    [
        (COMMITTEE_KEYGEN, "box_key.3", "member 3's box key is not signed by its account"),
        (COMMITTEE_SETUP, "sealed.1", "the share from member 1 does not open"),
    ],
)
def test_the_driver_cannot_swap_a_box_key_or_forge_a_sealed_share(
    heart_data, anvil_url, tmp_path, message_type, field, why
):
    """The driver relays the key setup: a box key it substitutes (to read the shares sealed
    for member 3) or a share it forges is refused by the member, and the run ends."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    transport = committee_transport()
    forged = X25519PrivateKey.generate().public_key().public_bytes_raw()
    if message_type == COMMITTEE_SETUP:
        forged = bytes(12) + forged  # a nonce, then 32 bytes that are no AES-GCM ciphertext
    recording = Recording(
        Tampering(transport.sites[2], message_type=message_type, field=field, value=forged)
    )
    transport.sites[2] = recording
    with pytest.raises(DeploymentError, match="failed at members"):
        RoundDriver(committee_settings(anvil_url, tmp_path, "mitm"), transport).run()
    assert [type(e) for e in recording.errors] == [CommitteeSiteError]
    assert why in str(recording.errors[0])


@pytest.mark.parametrize(
    "dp",
    [
        ("dp=sample", "dp.noise_multiplier=1.0", "dp.max_grad_norm=1.0"),
        ("dp=client", "dp.distributed=true", "dp.noise_multiplier=2.0", "dp.max_grad_norm=0.001"),
    ],
    ids=["sample", "client-distributed"],
)
def test_a_committee_with_dp_releases_every_round_and_audits_clean(
    heart_data, anvil_url, tmp_path, dp
):
    """DP with a committee: sample-level DP-SGD on each hospital, or client-level DP whose
    noise each hospital adds on its node (no single releasing party): epsilon per round in
    results.json, every round released by the committee, audit exit 0."""
    overrides = [o for o in HEART if not o.startswith("dp=")]
    settings = dataclasses.replace(
        committee_settings(anvil_url, tmp_path, "dp"), overrides=(*overrides, *COMMITTEE, *dp)
    )
    run = RoundDriver(settings, committee_transport()).run()
    assert [r.n_clients for r in run.results.rounds] == [4, 4]
    assert all(set(r.committee) == {1, 2, 3} for r in run.results.rounds)
    epsilons = [r.epsilon for r in run.results.rounds]
    assert all(e is not None and e > 0 for e in epsilons) and epsilons[1] > epsilons[0]
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
