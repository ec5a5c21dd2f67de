"""A deployed CKKS decryption committee (``secagg.committee_size`` = 3, threshold 2): each
member on its own node with its own ledger account and key share, over the in-process
transport; real TenSEAL ciphertexts, the real contract on anvil, the real auditor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eth_account import Account

from chain import RoundStatus
from deploy import (
    COMMITTEE_COMBINE,
    COMMITTEE_RELEASE,
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
    WireMessage,
)
from secagg._committee_round import REFUSAL_TOO_FEW_PARTIALS
from secagg._roles import REFUSAL_AGGREGATE_MISMATCH
from tests.flower.conftest import HEART, in_process_sites
from tests.flower.test_inprocess import FailingAt, FreshSitePerMessage, audit_cli

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
    """A site wrapper that keeps every error its site raised (the driver sees only a
    missing reply)."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.errors: list[Exception] = []

    def __call__(self, message: WireMessage) -> WireMessage:
        try:
            return self.handler(message)
        except Exception as error:
            self.errors.append(error)
            raise


def test_a_committee_round_equals_the_single_key_holder_run_and_audits_clean(
    heart_data, anvil_url, tmp_path, heart_settings
):
    run = RoundDriver(committee_settings(anvil_url, tmp_path, "committee"), committee_transport())
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
