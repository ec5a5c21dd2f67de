"""A consortium's own ledger: its admin deploys and registers (``secagg consortium``), the
aggregator's driver only attaches. Real anvil, real sites over the in-process transport."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import AnvilBackend, ChainError, Role
from deploy import (
    CommitteeSite,
    DeploymentError,
    DeploymentSettings,
    HospitalSite,
    InProcessTransport,
    KeyHolderSite,
    RoundDriver,
    SettingsError,
)
from deploy._consortium import main as consortium
from deploy._sites import SitePolicy, attach_ledger
from tests.flower.conftest import HEART, scheme_overrides
from tests.flower.test_inprocess import audit_cli

pytestmark = pytest.mark.anvil

FUND = str(10**18)


def key_file(tmp_path: Path, name: str, account: LocalAccount) -> Path:
    path = tmp_path / "keys" / f"{name}.key"
    path.parent.mkdir(exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(account.key.hex())
    return path


@dataclasses.dataclass
class Consortium:
    url: str
    address: str
    admin: LocalAccount
    admin_key: Path
    aggregator_key: Path
    hospitals: list[LocalAccount]
    key_holder: LocalAccount


@pytest.fixture
def consortium_ledger(anvil_url: str, tmp_path: Path, capsys) -> Consortium:
    """The admin deploys the consortium's ledger with the CLI and registers hospitals 0-2
    (hospital 3 is not registered), the aggregator and the key holder."""
    admin, aggregator, key_holder = Account.create(), Account.create(), Account.create()
    hospitals = [Account.create() for _ in range(4)]
    AnvilBackend(url=anvil_url).fund([admin.address], 10**20)  # the admin's own ether
    admin_key = key_file(tmp_path, "admin", admin)
    out = tmp_path / "ledger.json"
    argv = ["deploy", "--rpc", anvil_url, "--admin-key-file", str(admin_key)]
    argv += ["--epsilon-budget", "8", "--fund-wei", FUND, "--out", str(out)]
    argv += ["--aggregator", aggregator.address, "--key-holder", key_holder.address]
    for hospital in hospitals[:3]:
        argv += ["--client", hospital.address]
    assert consortium(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["admin"] == admin.address
    return Consortium(
        url=anvil_url,
        address=printed["address"],
        admin=admin,
        admin_key=admin_key,
        aggregator_key=key_file(tmp_path, "aggregator", aggregator),
        hospitals=hospitals,
        key_holder=key_holder,
    )


def pinned_sites(c: Consortium) -> InProcessTransport:
    policy = SitePolicy(ledger_address=c.address, schemes=("plain", "ckks"))
    sites = {
        100 + p: HospitalSite(partition_id=p, account=account, policy=policy).handle
        for p, account in enumerate(c.hospitals)
    }
    sites[1] = KeyHolderSite(account=c.key_holder, policy=policy).handle
    return InProcessTransport(sites)


def settings(c: Consortium, tmp_path: Path, *extra: str, **changes) -> DeploymentSettings:
    base = DeploymentSettings(
        overrides=(*HEART, *scheme_overrides("ckks"), "chain.epsilon_budget=8", *extra),
        ledger_url=c.url,
        output_dir=tmp_path / "run",
        hospitals=4,
        stage_timeout_s=60.0,
        ledger_address=c.address,
        aggregator_key_file=c.aggregator_key,
    )
    return dataclasses.replace(base, **changes)


def test_the_driver_attaches_to_the_consortium_ledger_and_leaves_out_the_unregistered(
    heart_data, consortium_ledger: Consortium, tmp_path: Path
) -> None:
    c = consortium_ledger
    run = RoundDriver(settings(c, tmp_path), pinned_sites(c)).run()
    assert str(run.results.ledger["address"]) == c.address  # no ledger of its own
    assert [r.n_clients for r in run.results.rounds] == [3, 3]  # hospital 3 is not registered
    left_out = run.results.meta["left_out_at_join"]
    assert list(left_out) == ["3"] and "not a registered client" in left_out["3"]
    assert run.results.final.audit["exit_code"] == 0
    ledger = attach_ledger(c.url, c.address)
    assert ledger.admin == c.admin.address  # the consortium's admin, not the driver's
    audit = subprocess.run(
        [sys.executable, "-m", "secagg", "audit", "--results", str(run.results_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_an_unregistered_aggregator_or_another_budget_is_refused_before_any_round(
    heart_data, consortium_ledger: Consortium, tmp_path: Path
) -> None:
    c = consortium_ledger
    ledger = attach_ledger(c.url, c.address)
    stranger = key_file(tmp_path, "stranger", Account.create())
    with pytest.raises(DeploymentError, match="not a registered aggregator"):
        RoundDriver(settings(c, tmp_path, aggregator_key_file=stranger), pinned_sites(c)).run()
    with pytest.raises(SettingsError, match="epsilon_budget"):
        RoundDriver(settings(c, tmp_path, "chain.epsilon_budget=50"), pinned_sites(c)).run()
    with pytest.raises(ChainError):  # no round was opened on the consortium's ledger
        ledger.round_info(1)
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_driver_with_its_own_ledger_is_refused_by_sites_pinned_to_the_consortium(
    heart_data, consortium_ledger: Consortium, tmp_path: Path
) -> None:
    """The single-operator path (the driver deploys and administers a ledger) cannot be
    used against a consortium's sites: each refuses a ledger it was not pinned to."""
    c = consortium_ledger
    own = settings(c, tmp_path, ledger_address=None, aggregator_key_file=None)
    run = RoundDriver(own, pinned_sites(c)).run()
    assert str(run.results.ledger["address"]) != c.address
    assert [r.n_clients for r in run.results.rounds] == [0, 0]  # every hospital refused
    assert all("ledger" in reason for r in run.results.rounds for reason in r.excluded.values())


def test_only_the_admin_registers_and_a_new_hospital_joins(
    consortium_ledger: Consortium, tmp_path: Path, capsys
) -> None:
    c = consortium_ledger
    newcomer = c.hospitals[3].address
    ledger = attach_ledger(c.url, c.address)
    assert Role.CLIENT not in ledger.roles_of(newcomer)
    intruder = key_file(tmp_path, "intruder", Account.create())
    common = ["--rpc", c.url, "--address", c.address]
    refused = consortium(
        ["register", *common, "--admin-key-file", str(intruder), "--role", "client", newcomer]
    )
    assert refused == 2 and "not the admin" in capsys.readouterr().err
    assert Role.CLIENT not in ledger.roles_of(newcomer)
    admin = ["--admin-key-file", str(c.admin_key), "--fund-wei", FUND]
    joined = consortium(["register", *common, *admin, "--role", "client", newcomer])
    assert joined == 0
    capsys.readouterr()
    assert Role.CLIENT in ledger.roles_of(newcomer)
    assert consortium(["roles", *common, newcomer, c.key_holder.address]) == 0
    roles = json.loads(capsys.readouterr().out)
    assert roles == {newcomer: ["client"], c.key_holder.address: ["key-holder"]}


def test_a_bad_key_file_is_named_and_never_echoed(anvil_url: str, tmp_path: Path, capsys) -> None:
    secret = "not-a-key-" + "5" * 40
    bad = tmp_path / "bad.key"
    bad.write_text(secret)
    argv = ["deploy", "--rpc", anvil_url, "--admin-key-file", str(bad), "--epsilon-budget", "1"]
    assert consortium(argv) == 2
    err = capsys.readouterr().err
    assert "does not hold a private key" in err and secret not in err
    assert (
        consortium(
            [*argv[:3], "--admin-key-file", str(tmp_path / "missing.key"), "--epsilon-budget", "1"]
        )
        == 2
    )
    assert "cannot read key file" in capsys.readouterr().err


def test_settings_need_the_aggregator_key_with_a_ledger_address(tmp_path: Path) -> None:
    address = Account.create().address
    with pytest.raises(SettingsError, match="aggregator_key_file"):
        DeploymentSettings(overrides=(), ledger_url="http://127.0.0.1:1", ledger_address=address)
    with pytest.raises(SettingsError, match="not an address"):
        DeploymentSettings(
            overrides=(),
            ledger_url="http://127.0.0.1:1",
            ledger_address="0x12",
            aggregator_key_file=tmp_path / "k",
        )
    parsed = DeploymentSettings.from_run_config(
        {
            "overrides": "dp=off",
            "ledger-url": "http://127.0.0.1:8545",
            "ledger-address": address,
            "aggregator-key-file": str(tmp_path / "k"),
            "ledger-start-block": 7,
        }
    )
    assert parsed.ledger_address == address and parsed.ledger_start_block == 7
    assert parsed.aggregator_key_file == tmp_path / "k"


def test_the_admin_sets_up_a_committee_and_the_driver_runs_it(
    heart_data, consortium_ledger: Consortium, tmp_path: Path, capsys
) -> None:
    """``secagg consortium committee``: only the admin, once; member j on chain is the
    node ``member=j``; a deployed run on the consortium's contract releases through it."""
    c = consortium_ledger
    keys = {j: Account.create() for j in (1, 2, 3)}
    members = [keys[j].address for j in (1, 2, 3)]
    common = ["--rpc", c.url, "--address", c.address, "--threshold", "2"]
    intruder = key_file(tmp_path, "intruder", Account.create())
    assert consortium(["committee", *common, "--admin-key-file", str(intruder), *members]) == 2
    assert "not the admin" in capsys.readouterr().err
    admin = ["--admin-key-file", str(c.admin_key), "--fund-wei", FUND]
    twice = [*members[:2], members[0]]
    assert consortium(["committee", *common, *admin, *twice]) == 2
    assert "listed twice" in capsys.readouterr().err
    assert consortium(["committee", *common, *admin, *members]) == 0
    printed = json.loads(capsys.readouterr().out)["committee"]
    assert printed == dict(zip("123", members, strict=True))
    assert consortium(["committee", *common, *admin, *members]) == 2  # once per contract
    assert "BadCommittee" in capsys.readouterr().err
    assert consortium(["roles", "--rpc", c.url, "--address", c.address, members[1]]) == 0
    shown = json.loads(capsys.readouterr().out)[members[1]]
    assert shown == {"roles": ["committee"], "committee_member": 2}

    policy = SitePolicy(ledger_address=c.address, schemes=("plain", "ckks"))
    sites = {
        100 + p: HospitalSite(partition_id=p, account=account, policy=policy).handle
        for p, account in enumerate(c.hospitals)
    }
    for j in (1, 2, 3):
        sites[j] = CommitteeSite(member=j, account=keys[j], policy=policy).handle
    committee_run = DeploymentSettings(
        overrides=(
            *HEART,
            "secagg=ckks",
            "secagg.committee_size=3",
            "secagg.committee_threshold=2",
            "chain.epsilon_budget=8",
        ),
        ledger_url=c.url,
        output_dir=tmp_path / "run",
        hospitals=4,
        key_holder=False,
        committee=3,
        stage_timeout_s=60.0,
        ledger_address=c.address,
        aggregator_key_file=c.aggregator_key,
    )
    run = RoundDriver(committee_run, InProcessTransport(sites)).run()
    assert [r.n_clients for r in run.results.rounds] == [3, 3]  # hospital 3 is not registered
    assert all(set(r.committee) == {1, 2, 3} for r in run.results.rounds)
    info = attach_ledger(c.url, c.address).committee()
    assert (
        info is not None and list(info.members) == members and set(info.share_digests) == {1, 2, 3}
    )
    assert run.results.final.audit["exit_code"] == 0
    audit = audit_cli(run.results_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
