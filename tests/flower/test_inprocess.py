"""The deployed round over the in-process transport: real sites, a real anvil ledger,
real TenSEAL ciphertexts; ``secagg audit --results`` from another process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deploy import (
    REVEAL,
    TRAIN,
    DeploymentSettings,
    RoundDriver,
    SettingsError,
    WireMessage,
)
from tests.flower.conftest import HEART, in_process_sites

pytestmark = pytest.mark.anvil


def audit_cli(results_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secagg", "audit", "--results", str(results_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("scheme", ["plain", "ckks"])
def test_two_rounds_every_hospital_included_and_the_audit_is_clean(heart_settings, scheme):
    settings = heart_settings(scheme)
    run = RoundDriver(settings, in_process_sites(4)).run()
    assert [r.n_clients for r in run.results.rounds] == [4, 4]
    assert all(not r.excluded for r in run.results.rounds)
    assert run.results.final.audit["exit_code"] == 0
    written = json.loads(run.results_path.read_text())
    assert written["ledger"]["address"] == str(run.results.ledger["address"])
    assert set(written["final"]["per_client_accuracy"]) == {
        "cleveland",
        "hungarian",
        "switzerland",
        "va",
    }
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "verdict: clean" in audit.stdout


def test_plain_gives_the_in_process_runners_model_bit_for_bit(heart_settings, run_reference):
    """dp=off: the deployment and the experiments runner (same seed) end on the same model."""
    run = RoundDriver(heart_settings("plain"), in_process_sites(4)).run()
    reference = run_reference("plain")
    assert run.params.dtype == reference.dtype
    assert np.array_equal(run.params, reference)


class FailingAt:
    """A site that stops answering ``message_type`` from round ``round_id`` on."""

    def __init__(self, handler, *, message_type: str, round_id: int) -> None:
        self.handler = handler
        self.message_type = message_type
        self.round_id = round_id

    def __call__(self, message: WireMessage) -> WireMessage:
        if message.type == self.message_type and message.integer("round") >= self.round_id:
            raise ConnectionError("site unreachable")
        return self.handler(message)


@pytest.mark.parametrize("stage", [TRAIN, REVEAL])
def test_a_hospital_lost_mid_run_is_a_dropout_and_the_audit_stays_clean(heart_settings, stage):
    transport = in_process_sites(4)
    transport.sites[102] = FailingAt(transport.sites[102], message_type=stage, round_id=2)
    run = RoundDriver(heart_settings("ckks"), transport).run()
    first, second = run.results.rounds
    assert first.n_clients == 4
    assert second.n_clients == 3
    assert 2 in second.excluded
    if stage == TRAIN:
        assert second.dropped == [2]
        assert "dropped out before committing" in second.excluded[2]
    else:
        assert second.dropped == []  # it committed, then never revealed
    assert run.results.final.audit["exit_code"] == 0, run.results.final.audit
    assert audit_cli(run.results_path).returncode == 0


def test_a_hospital_refuses_a_manifest_that_is_not_on_chain(heart_settings):
    """The aggregator cannot show one hospital another manifest than the one it opened the
    round with: that hospital refuses alone, the others go on."""
    transport = in_process_sites(4)
    honest = transport.sites[101]

    def tampered(message: WireMessage) -> WireMessage:
        if message.type == TRAIN:
            fields = dict(message.fields)
            fields["manifest"] = bytes(fields["manifest"]).replace(b'"dim"', b'"dim" ')
            message = WireMessage(TRAIN, fields=fields, arrays=message.arrays)
        return honest(message)

    transport.sites[101] = tampered
    run = RoundDriver(heart_settings("plain"), transport).run()
    for record in run.results.rounds:
        assert record.n_clients == 3
        assert "CommitmentMismatchError" in record.excluded[1]
    assert run.results.final.audit["exit_code"] == 0


def test_settings_refuse_what_is_not_deployed(heart_settings):
    with pytest.raises(SettingsError, match="committee"):
        RoundDriver(
            DeploymentSettings(
                overrides=(*HEART, "secagg=ckks"), ledger_url="http://127.0.0.1:1", hospitals=4
            ),
            in_process_sites(0),
        )
    with pytest.raises(SettingsError, match="commit_mode=merkle"):
        RoundDriver(heart_settings("masking", "chain.commit_mode=merkle"), in_process_sites(0))
    with pytest.raises(SettingsError, match="ledger_url"):
        DeploymentSettings(overrides=HEART, ledger_url="file:///etc/passwd")


class FreshSitePerMessage:
    """A site rebuilt for every message from the state it exported after the last one, as
    a Flower 1.42 SuperNode runs each message in a new ClientApp process."""

    def __init__(self, make_site) -> None:
        self.make_site = make_site
        self.state: dict = {}
        self.sites_made = 0

    def __call__(self, message: WireMessage) -> WireMessage:
        site = self.make_site()
        self.sites_made += 1
        site.restore_state(self.state)
        reply = site.handle(message)
        self.state = site.export_state()
        return reply


def test_sites_keep_their_state_across_fresh_processes(heart_settings):
    """The hospital's pending blob and the key holder's secret key survive between messages
    only through the state each exports (on its own node): no site object outlives one."""
    from eth_account import Account

    from deploy import HospitalSite, InProcessTransport, KeyHolderSite, SitePolicy

    hospital_keys = [Account.create() for _ in range(4)]
    key_holder_key = Account.create()
    wrappers = {
        100 + p: FreshSitePerMessage(
            lambda p=p: HospitalSite(
                partition_id=p, account=hospital_keys[p], policy=SitePolicy.permissive()
            )
        )
        for p in range(4)
    }
    wrappers[1] = FreshSitePerMessage(lambda: KeyHolderSite(account=key_holder_key))
    run = RoundDriver(heart_settings("ckks"), InProcessTransport(wrappers)).run()
    assert [r.n_clients for r in run.results.rounds] == [4, 4]
    assert run.results.final.audit["exit_code"] == 0
    assert all(w.sites_made >= 3 for w in wrappers.values())
    assert "secret" in wrappers[1].state  # kept by the key holder's node, never sent
