"""dp=sample on the deployment: each hospital runs Opacus DP-SGD under its own accountant,
which survives between per-message processes only in the hospital's exported state; the
ledger commits each event, the manifests each hospital's policy, and ``results.json``
reports the runner's epsilon; ``secagg audit --results`` re-accounts it and exits 0."""

from __future__ import annotations

import dataclasses
import json

import pytest
from eth_account import Account

from deploy import (
    JOIN,
    HospitalSite,
    InProcessTransport,
    KeyHolderSite,
    RoundDriver,
    SettingsError,
    SitePolicy,
    WireMessage,
)
from dp import PrivacyEvent
from secagg import CommitmentMismatchError, ManifestClient
from tests.flower.conftest import HEART, scheme_overrides
from tests.flower.test_inprocess import FreshSitePerMessage, audit_cli

pytestmark = pytest.mark.anvil

DP_SAMPLE = ("dp=sample", "dp.noise_multiplier=1.0", "dp.max_grad_norm=1.0")


def runner_records(*extra: str) -> tuple[list, object]:
    """The experiments runner's round records and final record (in-process, chain=none)."""
    from deploy._sites import compose_run_config
    from experiments._runner import build_federation

    overrides = [o for o in HEART if not o.startswith(("chain=", "dp="))]
    cfg, _ = compose_run_config([*overrides, *scheme_overrides("ckks"), *extra, "chain=none"])
    return build_federation(cfg).run()


def fresh_sites() -> tuple[dict[int, FreshSitePerMessage], InProcessTransport]:
    """Hospitals and a key holder rebuilt for every message (as Flower 1.42 SuperNodes)."""
    keys = [Account.create() for _ in range(4)]
    key_holder = Account.create()
    wrappers = {
        100 + p: FreshSitePerMessage(lambda p=p: HospitalSite(partition_id=p, account=keys[p]))
        for p in range(4)
    }
    wrappers[1] = FreshSitePerMessage(lambda: KeyHolderSite(account=key_holder))
    return wrappers, InProcessTransport(wrappers)


class Recording:
    """Passes messages through and keeps every reply a site sends to the aggregator."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.replies: list[WireMessage] = []

    def __call__(self, message: WireMessage) -> WireMessage:
        reply = self.handler(message)
        self.replies.append(reply)
        return reply


def test_dp_sample_over_fresh_processes_accounts_as_the_runner_and_audits_clean(heart_settings):
    wrappers, transport = fresh_sites()
    recorders = {node: Recording(site) for node, site in transport.sites.items()}
    transport.sites.update(recorders)
    run = RoundDriver(heart_settings("ckks", *DP_SAMPLE), transport).run()
    rounds = run.results.rounds
    assert [r.n_clients for r in rounds] == [4, 4]
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit

    # The epsilon of every round and the final one are the runner's for the same config.
    records, final_record = runner_records(*DP_SAMPLE)
    per_round, final = [r.epsilon for r in records], final_record.epsilon
    assert all(e is not None and e > 0 for e in per_round)
    assert [r.epsilon for r in rounds] == pytest.approx(per_round, rel=1e-9)
    assert run.results.final.epsilon == pytest.approx(final, rel=1e-9)
    assert rounds[1].epsilon > rounds[0].epsilon  # it accumulates across processes
    assert set(rounds[1].epsilon_per_client) == {"cleveland", "hungarian", "switzerland", "va"}
    assert run.results.final.delta == 1e-5

    # The accountant (its event chain) lives in each hospital's own state; the second
    # round's event links to the first one, which only that state carried over.
    for partition in range(4):
        state = json.loads(wrappers[100 + partition].state["dp.state"])
        events = [PrivacyEvent.from_bytes(raw.encode("ascii")) for raw in state["events"]]
        assert [e.round_id for e in events] == [1, 2]
        link = bytes.fromhex(events[1].previous_digest.removeprefix("0x"))
        assert link == bytes(events[0].digest())
    # ... and never reaches the aggregator: no reply carries it.
    for recorder in recorders.values():
        for reply in recorder.replies:
            assert "dp.state" not in reply.fields
            blobs = [bytes(v) for v in reply.fields.values() if isinstance(v, bytes)]
            assert all(b'"events"' not in blob for blob in blobs)

    written = json.loads(run.results_path.read_text())
    assert written["rounds"][1]["epsilon"] == pytest.approx(per_round[1], rel=1e-9)
    assert set(written["final"]["privacy"]) == {"cleveland", "hungarian", "switzerland", "va"}
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "verdict: clean" in audit.stdout


def test_a_hospital_past_its_budget_refuses_to_train_and_spends_nothing(heart_settings):
    """With an epsilon budget between the largest first- and second-round epsilon, the
    hospitals whose second round would pass it (the smallest ones: the largest sample rate)
    refuse round 2 alone, before training: they drop out and their epsilon stays put."""
    records, _ = runner_records(*DP_SAMPLE)
    budget = (records[0].epsilon + records[1].epsilon) / 2
    over = {name for name, e in records[1].epsilon_per_client.items() if e > budget}
    assert over  # the budget bites somewhere
    _, transport = fresh_sites()
    run = RoundDriver(
        heart_settings("ckks", *DP_SAMPLE, f"dp.epsilon_budget={budget}"), transport
    ).run()
    first, second = run.results.rounds
    names = {0: "cleveland", 1: "hungarian", 2: "switzerland", 3: "va"}
    assert first.n_clients == 4
    assert {names[c] for c in second.dropped} == over
    assert second.n_clients == 4 - len(over)
    for client_id in second.dropped:
        assert "PrivacyBudgetExceededError" in second.excluded[client_id]
        name = names[client_id]
        assert second.epsilon_per_client[name] == first.epsilon_per_client[name]
    assert second.epsilon <= budget
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit


def test_a_hospital_refuses_a_manifest_that_commits_another_policy(heart_data):
    """The aggregator cannot commit a weaker policy for a hospital than the one it runs:
    the hospital refuses before training (the check runs before any ledger call)."""
    hospital = HospitalSite(partition_id=0, policy=SitePolicy.permissive())  # plain: allowed
    overrides = "\n".join((*HEART[:-2], *DP_SAMPLE, "chain=anvil", *scheme_overrides("plain")))
    joined = hospital.handle(WireMessage(JOIN, fields={"overrides": overrides}))
    policy = hospital.privacy_policy()
    assert policy is not None
    assert json.loads(joined.text("policy")) == policy.to_dict()
    assert joined.integer("expected_steps") == policy.steps

    member = ManifestClient(
        client_id=0,
        address=str(hospital.account.address),
        weight=1.0,
        expected_steps=policy.steps,
        policy=dataclasses.replace(policy, noise_multiplier=policy.noise_multiplier * 3),
    )
    with pytest.raises(CommitmentMismatchError, match="privacy policy"):
        hospital._check_privacy(1, member)
    honest = dataclasses.replace(member, policy=policy)
    hospital._check_privacy(1, honest)  # its own policy passes
    assert hospital._dp_client().epsilon == 0.0  # nothing trained, nothing spent


def test_settings_refuse_dp_that_is_not_deployed(heart_settings):
    # dp=client is deployed (tests/flower/test_dp_client.py), but not central noise with
    # masking (no single releasing party), as in-process
    with pytest.raises(SettingsError, match="single releasing party"):
        dp_client = heart_settings("masking", "dp=client", "dp.noise_multiplier=1.0")
        RoundDriver(dp_client, fresh_sites()[1])
    with pytest.raises(SettingsError, match=r"dp\.audit"):
        RoundDriver(heart_settings("ckks", *DP_SAMPLE, "dp.audit=one_run"), fresh_sites()[1])


@pytest.mark.slow
def test_dp_sample_on_the_simulation_engine(heart_settings):
    """The same on Flower's simulation engine: the accountants ride in ``Context.state``."""
    from deploy.flower_app import run_in_simulation

    run = run_in_simulation(heart_settings("ckks", *DP_SAMPLE, name="flower"))
    records, _ = runner_records(*DP_SAMPLE)
    assert [r.n_clients for r in run.results.rounds] == [4, 4]
    assert run.results.meta["transport"] == "FlowerTransport"
    assert [r.epsilon for r in run.results.rounds] == pytest.approx(
        [r.epsilon for r in records], rel=1e-9
    )
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


class ReplyLostAt:
    """A site that handles ``message_type`` of ``round_id`` but whose reply never arrives."""

    def __init__(self, handler, *, message_type: str, round_id: int) -> None:
        self.handler = handler
        self.message_type = message_type
        self.round_id = round_id

    def __call__(self, message: WireMessage) -> WireMessage:
        reply = self.handler(message)
        if message.type == self.message_type and message.integer("round") == self.round_id:
            raise ConnectionError("reply lost")
        return reply


def test_an_event_whose_reply_was_lost_reaches_the_store_with_the_next_one(heart_settings):
    """Hospital 2 trains and commits in round 1, but its reply is lost: the aggregator has
    neither its blob nor its event then; its round-2 reply carries the whole chain, so the
    epsilon it spent in round 1 is reported and the audit finds every committed event."""
    from deploy import TRAIN

    _, transport = fresh_sites()
    transport.sites[102] = ReplyLostAt(transport.sites[102], message_type=TRAIN, round_id=1)
    run = RoundDriver(heart_settings("ckks", *DP_SAMPLE), transport).run()
    first, second = run.results.rounds
    assert first.dropped == [2]
    assert first.epsilon_per_client["switzerland"] == 0.0  # not known yet
    assert second.n_clients == 4
    records, _ = runner_records(*DP_SAMPLE)
    assert second.epsilon == pytest.approx(records[1].epsilon, rel=1e-9)
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
