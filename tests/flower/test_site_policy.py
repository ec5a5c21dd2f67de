"""A site's own policy (its node config) against a driver that lies.

The aggregator's side composes the run config, names the ledger and writes the manifest.
A hospital must not hand its update to a scheme that does not protect it, to a round of
one, or to a contract it did not join; a key holder must not release against a ledger the
aggregator swapped in (there, "committed" blobs and the one-release reservation would be
whatever the aggregator wrote). Each refusal happens at the site, before anything leaves it.
"""

from __future__ import annotations

import pytest
from eth_account import Account

from deploy import (
    JOIN,
    RELEASE,
    HospitalSite,
    KeyHolderSite,
    SettingsError,
    SitePolicy,
    SitePolicyError,
    WireMessage,
)
from secagg import ManifestClient, RoundManifest
from tests.flower.conftest import HEART, SINGLE_KEY_HOLDER

A = "0x" + "11" * 20
B = "0x" + "22" * 20


def _join(*overrides: str) -> WireMessage:
    return WireMessage(JOIN, fields={"overrides": "\n".join(overrides)})


def _manifest(n_clients: int, *, scheme: str = "ckks", dp_mode: str = "off") -> RoundManifest:
    return RoundManifest(
        round_id=3,
        scheme=scheme,
        scheme_config={},
        dim=4,
        clients=tuple(
            ManifestClient(client_id=c, address=Account.create().address, weight=1.0)
            for c in range(n_clients)
        ),
        dp_mode=dp_mode,
    )


def test_a_hospital_refuses_a_run_without_protection_before_loading_data(tmp_path) -> None:
    # no data directory exists: the refusal must come before any data is read
    hospital = HospitalSite(partition_id=0, data_dir=str(tmp_path / "absent"))
    with pytest.raises(SitePolicyError, match="secagg=plain is not accepted"):
        hospital.handle(_join(*HEART, "secagg=plain"))
    assert hospital.federation is None


def test_a_hospital_that_requires_dp_refuses_dp_off(tmp_path) -> None:
    hospital = HospitalSite(
        partition_id=0, data_dir=str(tmp_path / "absent"), policy=SitePolicy(require_dp=True)
    )
    with pytest.raises(SitePolicyError, match="requires sample-level DP"):
        hospital.handle(_join(*HEART, "secagg=ckks", *SINGLE_KEY_HOLDER))


def test_a_round_of_one_or_of_an_unaccepted_scheme_is_refused() -> None:
    policy = SitePolicy()
    policy.check_round(_manifest(2))  # two clients under CKKS: accepted
    with pytest.raises(SitePolicyError, match="1 selected clients"):
        policy.check_round(_manifest(1))
    with pytest.raises(SitePolicyError, match="secagg=plain"):
        policy.check_round(_manifest(3, scheme="plain"))
    with pytest.raises(SitePolicyError, match="requires sample-level DP"):
        SitePolicy(require_dp=True).check_round(_manifest(3))
    SitePolicy.permissive().check_round(_manifest(2, scheme="plain"))


def test_the_ledger_is_the_sites_pinned_contract_never_one_the_driver_swaps_in() -> None:
    pinned = SitePolicy(ledger_address=A)
    with pytest.raises(SitePolicyError, match="this site serves"):
        pinned.ledger(None, url="http://127.0.0.1:1", address=B, start_block=0)
    # trust on first use: once a site joined a contract, another one is refused
    with pytest.raises(SitePolicyError, match="joined"):
        SitePolicy().ledger(None, url="http://127.0.0.1:1", address=B, start_block=0, pinned=A)


def test_a_key_holder_refuses_a_release_on_a_ledger_it_did_not_join() -> None:
    key_holder = KeyHolderSite(policy=SitePolicy(ledger_address=A))
    key_holder.handle(_join(*HEART, "secagg=ckks", *SINGLE_KEY_HOLDER))  # makes its key
    release = WireMessage(
        RELEASE,
        fields={
            "round": 1,
            "ledger_url": "http://127.0.0.1:1",
            "ledger_address": B,
            "start_block": 0,
            "manifest": b"",
            "aggregate": b"",
            "blobs": 0,
        },
    )
    with pytest.raises(SitePolicyError, match="this site serves"):
        key_holder.handle(release)
    # the pin survives a fresh process (Flower 1.42 runs each message in a new one)
    assert key_holder._pinned is None  # nothing joined yet: the node config's pin refused it
    fresh = KeyHolderSite(policy=SitePolicy())
    fresh.restore_state({**key_holder.export_state(), "ledger_address": A})
    with pytest.raises(SitePolicyError, match="joined"):
        fresh.handle(release)


def test_node_config_is_parsed_and_checked() -> None:
    policy = SitePolicy.from_node_config(
        {
            "role": "hospital",
            "ledger-url": "http://10.0.0.5:8545",
            "ledger-address": A,
            "schemes": "ckks",
            "min-clients": 3,
            "require-dp": "true",
        }
    )
    assert policy == SitePolicy(
        ledger_url="http://10.0.0.5:8545",
        ledger_address=A,
        schemes=("ckks",),
        min_clients=3,
        require_dp=True,
    )
    assert SitePolicy.from_node_config({"role": "keyholder"}) == SitePolicy()
    for bad in (
        {"ledger-url": "ftp://x"},
        {"ledger-address": "0x12"},
        {"schemes": "rot13"},
        {"min-clients": 0},
    ):
        with pytest.raises(SettingsError):
            SitePolicy.from_node_config(bad)
